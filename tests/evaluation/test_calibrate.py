"""``medisee.evaluation.calibrate``: the score threshold chosen on validation data, by hand-computed
cases and by a real run that rewrites a saved tiny model's config."""

from __future__ import annotations

import json

import pytest

from medisee.builder import build_random
from medisee.config import preset
from medisee.data.mlmr import write_mlmr_jsonl
from medisee.predictor import Predictor
from medisee.weights import load_checkpoint, save_checkpoint
from medisee.evaluation.calibrate import Measurements, calibrate, choose_box_source, choose_threshold, measure

from tests.evaluation.test_evaluate import GT, write_record


def test_the_lowest_threshold_that_meets_the_absent_goal_is_chosen():
    present, absent = [0.9, 0.6, 0.3], [0.1, 0.2, 0.4, 0.7]
    chosen = choose_threshold(present, absent, absent_goal=0.75)
    assert chosen.threshold == 0.45  # 0.40 leaves 0.4 reported: only 2 of 4 absent targets answered with nothing
    assert (chosen.absent_none, chosen.present_found, chosen.absent, chosen.present) == (0.75, 2 / 3, 4, 3)
    assert choose_threshold(present, absent, absent_goal=1.0).threshold == 0.75
    assert choose_threshold(present, [0.99], absent_goal=0.5).threshold == 0.95  # out of reach: the strictest
    with pytest.raises(ValueError, match="present and absent"):
        choose_threshold(present, [])


def test_the_box_source_with_more_hits_among_found_targets_is_chosen():
    hits = [{"decoder": True, "mask": False}, {"decoder": False, "mask": True}, {"decoder": False, "mask": True},
            None, {"decoder": True, "mask": True}]
    measured = Measurements(present=[0.9, 0.8, 0.2, 0.0, 0.7], absent=[0.1], box_hits=hits)
    assert choose_box_source(measured, 0.1) == ("mask", {"decoder": 0.5, "mask": 0.75})
    # at 0.5 the third target is not reported: 2 of 3 found targets for each source, a tie keeps the decoder
    assert choose_box_source(measured, 0.5) == ("decoder", {"decoder": 2 / 3, "mask": 2 / 3})
    assert choose_box_source(measured, 0.95) == ("decoder", {"decoder": 0.0, "mask": 0.0})  # nothing found


def test_calibrate_measures_the_validation_split_and_rewrites_the_threshold(tmp_path, tiny_tokenizer):
    folder = tmp_path / "data"
    folder.mkdir()
    records = [write_record(folder, "a", "liver", GT["a"], "CT", seed=0),
               write_record(folder, "c", "kidney", GT["c"], "CT", seed=2),
               write_record(folder, "d", "kidney", None, "CT", seed=3)]
    val = tmp_path / "val.jsonl"
    write_mlmr_jsonl(records, val)
    model = tmp_path / "model"
    save_checkpoint(build_random(preset("tiny"), seed=0, tokenizer=tiny_tokenizer), model)

    result = calibrate(model, val, absent_goal=0.5)
    measured = measure(Predictor(load_checkpoint(model), score_threshold=0.0), records)
    assert (len(measured.present), len(measured.absent), len(measured.box_hits)) == (4, 2, 4)  # short + long each
    expected = choose_threshold(measured.present, measured.absent, absent_goal=0.5)
    expected.box_source, expected.box_acc = choose_box_source(measured, expected.threshold)
    assert result == expected
    saved = json.loads((model / "config.json").read_text())
    assert (saved["score_threshold"], saved["box_source"]) == (result.threshold, result.box_source)
    assert load_checkpoint(model).config.score_threshold == result.threshold
    assert not list(model.glob("*.partial"))


def test_the_calibrate_command_reports_and_refuses_bad_input(tmp_path, tiny_tokenizer, capsys):
    from medisee.cli import main

    folder = tmp_path / "data"
    folder.mkdir()
    records = [write_record(folder, "a", "liver", GT["a"], "CT", seed=0), write_record(folder, "d", "kidney", None, "CT", seed=3)]
    write_mlmr_jsonl(records, tmp_path / "val.jsonl")
    save_checkpoint(build_random(preset("tiny"), seed=0, tokenizer=tiny_tokenizer), tmp_path / "model")
    assert main(["calibrate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "val.jsonl")]) == 0
    assert "score threshold" in capsys.readouterr().out
    assert main(["calibrate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "val.jsonl"),
                 "--absent-goal", "1.5"]) == 2
    assert "--absent-goal must be in (0, 1]" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(tmp_path / "nothing"), "--data", str(tmp_path / "val.jsonl")]) == 2
    assert main(["calibrate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "missing.jsonl")]) == 2
    present_only = tmp_path / "present.jsonl"
    write_mlmr_jsonl(records[:1], present_only)
    assert main(["calibrate", "--model", str(tmp_path / "model"), "--data", str(present_only)]) == 2
    assert "needs present and absent targets" in capsys.readouterr().err
