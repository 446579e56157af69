"""``medisee.evaluation.evaluate_mimo``: the MIMOSeg perspectives built from MLMR records, answered by a
scripted predictor whose exact metrics are known, and the command's ``--mimo`` table."""

from __future__ import annotations

import argparse
import json
import types

import numpy as np
import pytest
from PIL import Image

from medisee.commands import evaluate as evaluate_command
from medisee.data.loader import load_image, load_mask
from medisee.data.records import Record
from medisee.predictor import Entity, Prediction
from medisee.evaluation.evaluate_mimo import evaluate_mimo, mimo_instructions

H, W = 48, 64
MASKS = {"liver": (8, 30, 4, 30), "spleen": (10, 26, 40, 58)}  # y0, y1, x0, x1


def _rect(y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def records(tmp_path) -> list[Record]:
    """Two slices, each with a liver and a spleen (so perspective I names two structures)."""
    out = []
    for n in range(2):
        image = tmp_path / f"slice{n}.png"
        Image.fromarray((np.random.default_rng(n).random((H, W)) * 255).astype(np.uint8)).save(image)
        for name, (y0, y1, x0, x1) in MASKS.items():
            mask = tmp_path / f"slice{n}-{name}.png"
            Image.fromarray(_rect(y0, y1 + n, x0, x1).astype(np.uint8) * 255).save(mask)
            out.append(Record(image, mask, name, "q", "q", (x0 / W, y0 / H, x1 / W, (y1 + n) / H),
                              source=f"test.jsonl:{len(out) + 1}", extra={"split": "test", "modality": "CT"}))
    return out


def _rounded(values) -> tuple | None:
    return None if values is None else tuple(round(float(v), 3) for v in values)


def _pixels(normalised) -> tuple | None:
    """A normalised box/point in this test's pixels, as evaluate_mimo hands it to the predictor."""
    if normalised is None:
        return None
    return _rounded([v * (W if i % 2 == 0 else H) for i, v in enumerate(normalised)])


class Oracle:
    """Answers every instruction with its ground truth; ``rename`` maps phrases to wrong ones."""

    def __init__(self, instructions: list[Record], rename: dict[str, str] | None = None, answer: str | None = None):
        self.by_query = {}
        self.rename = rename or {}
        self.answer = answer
        self.calls = []
        for record in instructions:
            targets = record.extra.get("targets") or [{"class_text": record.class_text, "mask": record.mask}]
            box, point = record.extra.get("prompt_box"), record.extra.get("prompt_point")
            key = (record.short, load_image(record).tobytes(), _pixels(box), _pixels(point))
            self.by_query[key] = [(t["class_text"], load_mask(record, t["mask"])) for t in targets]
        self.model = types.SimpleNamespace(config=types.SimpleNamespace(candidate_tokens=("[SEG]", "[BBOX]")))

    def predict(self, image, query, mode="full", box=None, point=None):
        self.calls.append({"query": query, "mode": mode, "box": box, "point": point})
        found = self.by_query[(query, image.tobytes(), _rounded(box), _rounded(point))]
        entities = [Entity(self.rename.get(name, name), mask, (0, 0, 1, 1), 0.9, 1.0) for name, mask in found]
        return Prediction(answer=self.answer if self.answer is not None else "", entities=entities)


def test_instructions_cover_the_four_perspectives_with_held_out_phrasings(records):
    chosen = mimo_instructions(records, seed=0)
    perspectives = [r.extra["perspective"] for r in chosen]
    assert perspectives == sorted(perspectives, key=["I", "II", "III", "IV"].index)
    assert perspectives.count("I") == 6 and perspectives.count("II") == 4  # per slice: both named, then each alone
    assert [len(r.extra.get("targets", [None])) for r in chosen if r.extra["perspective"] == "I"] == [2, 1, 1] * 2
    assert mimo_instructions(records, seed=0) == chosen
    limited = mimo_instructions(records, seed=0, limit_per_perspective=1)
    assert [r.extra["perspective"] for r in limited] == ["I", "II", "III", "IV"]


def test_perfect_answers_score_one_and_prompts_arrive_in_pixels(records, tmp_path):
    chosen = [r for r in mimo_instructions(records, seed=0) if r.extra["perspective"] != "I"][:6]
    chosen += [r for r in mimo_instructions(records, seed=0) if r.extra["perspective"] == "I"]
    oracle = Oracle(chosen)
    metrics = evaluate_mimo(oracle, chosen, tmp_path / "out")
    everything = metrics["perspectives"]["all"]
    assert everything["miou"] == 1.0 and everything["ap50"] == 1.0 and everything["grounding_f1"] == 1.0
    assert everything["grounding_gt"] == sum(len(r.extra.get("targets", [0])) for r in chosen)
    assert metrics["prompt_naming"]["all"]["rate"] == 1.0
    assert {c["mode"] for c in oracle.calls} == {"full"}
    for record, call in zip(chosen, oracle.calls):
        if "prompt_box" in record.extra:
            x0, y0, x1, y1 = record.extra["prompt_box"]
            assert call["box"] == pytest.approx((x0 * W, y0 * H, x1 * W, y1 * H))
        if "prompt_point" in record.extra:
            assert call["point"] == pytest.approx((record.extra["prompt_point"][0] * W, record.extra["prompt_point"][1] * H))
        if record.extra["perspective"] in ("I", "III"):
            assert call["box"] is None and call["point"] is None
    lines = (tmp_path / "out" / "mimo_per_sample.jsonl").read_text().splitlines()
    assert len(lines) == len(chosen) and json.loads((tmp_path / "out" / "mimo_metrics.json").read_text()) == metrics


def test_wrong_names_cost_grounding_f1_and_naming_but_not_masks(records, tmp_path):
    chosen = mimo_instructions(records, seed=0)
    metrics = evaluate_mimo(Oracle(chosen, rename={"spleen": "stomach"}), chosen, tmp_path / "out")
    per = metrics["perspectives"]
    assert per["all"]["miou"] == 1.0
    # perspective I: 2 images x (liver right, spleen wrong) -> precision = recall = 1/2
    assert per["I"]["grounding_f1"] == pytest.approx(0.5)
    spleen_prompts = sum(r.class_text == "spleen" for r in chosen if r.extra["perspective"] in ("II", "IV"))
    prompted = sum(r.extra["perspective"] in ("II", "IV") for r in chosen)
    assert metrics["prompt_naming"]["all"]["rate"] == pytest.approx(1 - spleen_prompts / prompted)
    assert metrics["prompt_naming"]["all"]["count"] == prompted
    assert metrics["prompt_naming"]["box"]["count"] + metrics["prompt_naming"]["point"]["count"] == prompted


def test_answer_text_is_scored_against_the_reference_without_tags(records, tmp_path):
    chosen = [r for r in mimo_instructions(records, seed=0) if r.extra["perspective"] == "III"]
    perfect = evaluate_mimo(Oracle(chosen), chosen, tmp_path / "a")  # the empty answer
    assert perfect["perspectives"]["III"]["rouge_l"] == 0.0
    from medisee.conversation import parse_answer

    echo = Oracle(chosen)
    echo.predict_text = {r.short: parse_answer(r.extra["answer"], ("[SEG]", "[BBOX]")).text for r in chosen}
    original = echo.predict
    echo.predict = lambda image, query, **kw: Prediction(echo.predict_text[query], original(image, query, **kw).entities)
    same = evaluate_mimo(echo, chosen, tmp_path / "b")
    assert same["perspectives"]["III"]["rouge_l"] == pytest.approx(1.0)
    assert same["perspectives"]["III"]["bleu4"] == pytest.approx(1.0)


def test_nothing_to_evaluate_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no MIMO instructions"):
        evaluate_mimo(Oracle([]), [], tmp_path)


@pytest.mark.slow
def test_command_prints_the_perspective_table(records, tmp_path, monkeypatch, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text("{}\n")
    monkeypatch.setattr(evaluate_command, "read_mlmr_jsonl", lambda path, validate=True: list(records))

    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers())
    out = tmp_path / "eval"
    args = parser.parse_args(["evaluate", "--data", str(data), "--out", str(out), "--mimo", "--mimo-limit", "1"])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    for row in ("perspective", "mIoU", "AP50", "gF1", "BLEU-4", "ROUGE-L", "METEOR", "box/point without the name"):
        assert row in printed
    metrics = json.loads((out / "mimo_metrics.json").read_text())
    assert metrics["instructions"] == 4 and set(metrics["perspectives"]) == {"all", "I", "II", "III", "IV"}
