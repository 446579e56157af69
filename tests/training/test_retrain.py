"""Retraining on corrections: the acceptance rule, the held-out split, input errors, the
command line, and one real (short) DeepSpeed round from the bundled model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medisee.data.corrections import Correction
from medisee.data.demo.ct_phantom import generate_phantom
from medisee.data.mlmr import read_mlmr_jsonl
from medisee.data.records import Record
from medisee.models import default_model_dir
from medisee.weights import load_checkpoint
from training.retrain import RULE, main, retrain, should_accept, split_records

SHAPE, SPACING = (12, 64, 64), (6.0, 6.0, 16.0)
QUERY = "Which organs in the upper abdomen filter or store blood?"
NAMES = {1: "liver", 2: "spleen"}


def write_study(folder: Path, seed: int) -> tuple[Path, Path]:
    """Phantom ``seed`` (NIfTI, HU) and its liver (1) and spleen (2) label volume."""
    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING)
    image = phantom.to_medical_image().to_sitk()
    labels = np.zeros(phantom.shape, np.uint8)
    labels[phantom.masks["liver"]], labels[phantom.masks["spleen"]] = 1, 2
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"ct{seed}.nii.gz"))
    sitk.WriteImage(label, str(folder / f"ct{seed}-label.nii.gz"))
    return folder / f"ct{seed}.nii.gz", folder / f"ct{seed}-label.nii.gz"


def fake_records(studies: dict[str, int]) -> list[Record]:
    """``slices`` present records per study (one per slice) plus one absent record each."""
    records = []
    for study, slices in studies.items():
        for k in range(slices):
            records.append(Record(Path(f"/{study}/{k}.png"), Path(f"/{study}/{k}_m.png"), "liver", "q", "q",
                                  (0.1, 0.1, 0.5, 0.5), extra={"study": study, "slice": k}))
        records.append(Record(Path(f"/{study}/99.png"), None, "liver", "q", "q", None, absent=True,
                              extra={"study": study, "slice": 99}))
    return records


@pytest.mark.parametrize("before, after, accepted", [
    (0.30, 0.31, True), (0.30, 0.30, True), (0.0, 0.0, True), (0.30, 0.2999, False), (0.5, math.nan, False),
])
def test_the_new_model_is_accepted_only_when_no_worse(before, after, accepted):
    assert should_accept(before, after) is accepted
    assert "gIoU" in RULE and "ties accept" in RULE


def test_whole_studies_are_held_out_when_there_are_several():
    records = fake_records({"a": 3, "b": 4, "c": 2, "d": 5})
    train, heldout, by, studies = split_records(records, 0.25, seed=0)
    assert by == "study" and len(studies) == 1
    assert {r.extra["study"] for r in heldout} == set(studies)
    assert not {r.extra["study"] for r in train} & set(studies) and len(train) + len(heldout) == len(records)
    assert split_records(records, 0.25, seed=0)[3] == studies  # deterministic
    _, _, _, most = split_records(fake_records({"a": 2, "b": 2}), 0.9, seed=0)
    assert len(most) == 1  # never every study


def test_a_single_study_holds_out_some_of_its_labelled_slices():
    records = fake_records({"only": 8})
    train, heldout, by, studies = split_records(records, 0.25, seed=3)
    assert by == "slice" and studies == []
    held = {r.extra["slice"] for r in heldout}
    assert len(held) == 2 and not held & {r.extra["slice"] for r in train}
    assert all(not r.absent for r in heldout)  # the empty slice trains
    assert split_records(records, 0.25, seed=3)[1] == heldout
    with pytest.raises(ValueError, match="one labelled slice"):
        split_records(fake_records({"only": 1}), 0.25, seed=0)


def test_bad_inputs_fail_before_any_training(tmp_path):
    image, label = write_study(tmp_path / "s", 3)
    correction = Correction(image, label, NAMES, QUERY)
    with pytest.raises(ValueError, match="no corrections"):
        retrain(default_model_dir(), [], tmp_path / "w1")
    with pytest.raises(ValueError, match="not a MediSee checkpoint"):
        retrain(tmp_path, [correction], tmp_path / "w2")
    (tmp_path / "w3").mkdir()
    (tmp_path / "w3" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        retrain(default_model_dir(), [correction], tmp_path / "w3")
    with pytest.raises(ValueError, match="heldout_fraction"):
        retrain(default_model_dir(), [correction], tmp_path / "w4", heldout_fraction=1.0)


def test_command_line_help_and_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--names" in capsys.readouterr().out
    image, label = write_study(tmp_path / "s", 3)
    base = ["--model", "default", "--image", str(image), "--label", str(label), "--out", str(tmp_path / "w")]
    assert main([*base, "--names", "{1: liver}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    small = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((12, 8, 8), np.uint8)), str(small))
    assert main(["--model", "default", "--image", str(image), "--label", str(small), "--names", '{"1": "liver"}',
                 "--out", str(tmp_path / "w")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "(12, 8, 8)" in error and "(12, 64, 64)" in error
    assert main([*base, "--label", str(label), "--names", '{"1": "liver"}']) == 2
    assert "one label per image" in capsys.readouterr().err


@pytest.mark.slow
def test_a_retraining_round_reports_before_and_after_on_held_out_studies(tmp_path):
    base = shutil.copytree(default_model_dir(), tmp_path / "base")  # a snapshot: the bundled model may be rebuilt
    corrections = [Correction(*write_study(tmp_path / "studies", seed), NAMES, QUERY) for seed in (3, 4)]
    seen = []
    report = retrain(base, corrections, tmp_path / "work", steps=4, batch_size=2, max_slices_per_study=4,
                     progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert report.heldout_by == "study" and len(report.heldout_studies) == 1 and len(report.train_studies) == 1
    assert report.n_train > 0 and report.n_heldout > 0 and report.steps == 4
    for numbers in (report.before, report.after):
        assert 0.0 <= numbers["giou"] <= 1.0 and numbers["count"] > 0 and numbers["records"] == report.n_heldout
    assert report.accepted == should_accept(report.before["giou"], report.after["giou"])
    assert load_checkpoint(report.new_model_dir).config.name == "tiny"
    assert not (tmp_path / "work" / "run" / "checkpoints").exists()  # only the exported model is kept
    assert json.loads((tmp_path / "work" / "report.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    heldout = read_mlmr_jsonl(tmp_path / "work" / "data" / "heldout.jsonl")
    train = read_mlmr_jsonl(tmp_path / "work" / "data" / "train.jsonl")
    assert {r.extra["study"] for r in heldout} == set(report.heldout_studies)
    assert {r.extra["study"] for r in train} == set(report.train_studies)
    assert ("train", 4, 4) in seen and ("data", 2, 2) in seen
    assert {phase for phase, *_ in seen} == {"data", "before", "train", "after"}
