"""``medisee.evaluation.evaluate``: exact metrics end to end with a scripted predictor, and a run with
the real tiny predictor (files, cache use, progress)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medisee.commands import evaluate as evaluate_command
from medisee.data.records import DataError, Record
from medisee.predictor import Entity, Prediction, Predictor
from medisee.evaluation.evaluate import evaluate, quality_iou_correlation
from medisee.evaluation.report import CAPTION_HEIGHT, GAP, GRID_COLUMNS, HEADER_HEIGHT, TILE

H, W = 48, 64


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_record(folder: Path, name: str, cls: str, mask: np.ndarray | None, modality: str | None = None,
                 seed: int = 0, rgb: bool = False) -> Record:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((H, W, 3) if rgb else (H, W)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    mask_path = None
    bbox = None
    if mask is not None:
        mask_path = folder / f"{name}-mask.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        rows, cols = np.nonzero(mask)
        bbox = (cols.min() / W, rows.min() / H, (cols.max() + 1) / W, (rows.max() + 1) / H)
    return Record(
        image=folder / f"{name}.png", mask=mask_path, class_text=cls,
        long=f"long question about {name}", short=f"short {name}?", bbox=bbox,
        absent=mask is None, source=f"data.jsonl:{seed + 1}",
        extra={"modality": modality} if modality else {},
    )


GT = {
    "a": rect(10, 20, 10, 30),  # 200 px, box (10, 10, 30, 20)
    "b": rect(0, 24, 0, 32),  # 768 px
    "c": rect(30, 40, 40, 60),  # 200 px
}


@pytest.fixture
def dataset(tmp_path) -> list[Record]:
    folder = tmp_path / "data"
    folder.mkdir()
    return [
        write_record(folder, "a", "liver", GT["a"], "CT", seed=0),
        write_record(folder, "b", "liver", GT["b"], "CT", seed=1, rgb=True),
        write_record(folder, "c", "kidney", GT["c"], "MR", seed=2),
        write_record(folder, "d", "kidney", None, "MR", seed=3),
    ]


def entity(mask: np.ndarray, box, score: float = 0.9) -> Entity:
    return Entity(phrase="x", mask=mask, box=tuple(float(v) for v in box), score=score, mask_quality=1.0)


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


class ScriptedPredictor:
    """Answers each query with the entities it was given for it (nothing when unscripted)."""

    def __init__(self, answers: dict[str, list[Entity]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, tuple]] = []

    def predict(self, image, query, mode="full"):
        self.calls.append((query, mode, image.shape))
        return Prediction(answer="", entities=list(self.answers.get(query, [])))


def perfect(records: list[Record]) -> ScriptedPredictor:
    answers = {}
    for record in records:
        if record.absent:
            continue
        gt = GT[record.image.stem]
        answers[record.short] = answers[record.long] = [entity(gt, box_of(gt))]
    return ScriptedPredictor(answers)


def grid_size(tiles: int) -> tuple[int, int]:
    rows = math.ceil(tiles / GRID_COLUMNS)
    return GAP + min(tiles, GRID_COLUMNS) * (TILE + GAP), HEADER_HEIGHT + GAP + rows * (TILE + CAPTION_HEIGHT + GAP)


def test_perfect_predictions_score_one(dataset, tmp_path):
    predictor = perfect(dataset)
    seen = []
    metrics = evaluate(predictor, dataset, tmp_path / "out", progress=lambda d, t: seen.append((d, t)))

    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # every record once per kind, short first, fast mode, the image at full size
    assert [c[0] for c in predictor.calls] == [q for r in dataset for q in (r.short, r.long)]
    assert {c[1] for c in predictor.calls} == {"fast"}
    assert predictor.calls[2][2] == (H, W, 3)
    for name in ("overall", "short", "long"):
        group = metrics[name]
        assert (group["giou"], group["ciou"], group["dice"], group["box_iou"], group["box_acc"]) == (1, 1, 1, 1, 1)
        assert group["absence_rate"] == 1.0
    assert metrics["overall"]["count"] == 6 and metrics["overall"]["box_count"] == 6
    assert metrics["overall"]["absent_count"] == 2 and metrics["overall"]["queries"] == 8
    assert metrics["short"]["count"] == 3 and metrics["short"]["absent_count"] == 1
    assert (metrics["records"], metrics["present_records"], metrics["absent_records"], metrics["queries"]) == (4, 3, 1, 8)
    assert metrics["cache"] is None  # the scripted predictor has none
    assert set(metrics["by_class"]) == {"kidney", "liver"}
    assert metrics["by_class"]["liver"]["overall"]["count"] == 4
    assert metrics["by_class"]["liver"]["overall"]["absence_rate"] is None  # no absent liver
    assert metrics["by_class"]["kidney"]["long"] == pytest.approx(
        metrics["by_modality"]["MR"]["long"] | {"seconds_per_query": metrics["by_class"]["kidney"]["long"]["seconds_per_query"]})
    assert metrics["by_modality"]["MR"]["overall"]["absent_count"] == 2

    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    lines = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    assert lines[0] | {"seconds": 0} == {
        "source": "data.jsonl:1", "image": str(dataset[0].image), "class": "liver", "kind": "short", "modality": "CT",
        "query": "short a?", "absent": False, "predicted_nothing": False, "score": 0.9, "mask_quality": 1.0,
        "iou": 1.0, "dice": 1.0,
        "box_iou": 1.0, "seconds": 0,
    }
    assert lines[-1]["absent"] and lines[-1]["predicted_nothing"] and lines[-1]["iou"] is None
    with Image.open(out / "worst_cases.png") as grid:
        assert grid.size == grid_size(6) and grid.mode == "RGB"
    assert not list(out.glob(".*.tmp"))


def test_imperfect_predictions_by_hand(dataset, tmp_path):
    a, b, c, d = dataset
    half_a = rect(10, 20, 10, 20)  # 100 of a's 200 px: IoU 0.5, Dice 2/3, box IoU 0.5
    shifted_c = rect(30, 40, 50, 70)[:, :W]  # rect(30,40,50,64): 140 px, overlap 100 with c (200)
    predictor = ScriptedPredictor({
        a.short: [entity(half_a, box_of(half_a), 0.8), entity(GT["a"], box_of(GT["a"]), 0.3)],  # best score wins
        a.long: [],  # predicted nothing: IoU 0, box IoU 0
        b.short: [entity(GT["b"], box_of(GT["b"]))],
        b.long: [entity(GT["b"], box_of(GT["b"]))],
        c.short: [entity(shifted_c, box_of(shifted_c))],
        c.long: [entity(GT["c"], (0, 0, 0, 5))],  # degenerate box
        d.short: [entity(rect(0, 2, 0, 2), (0, 0, 2, 2))],  # a false alarm on the absent target
        d.long: [],
    })
    metrics = evaluate(predictor, dataset, tmp_path / "out", mode="full")
    assert {call[1] for call in predictor.calls} == {"full"}

    iou_c = 100 / (200 + 140 - 100)
    dice_c = 2 * 100 / (200 + 140)
    short, long, overall = metrics["short"], metrics["long"], metrics["overall"]
    assert short["giou"] == pytest.approx((0.5 + 1 + iou_c) / 3)
    assert short["ciou"] == pytest.approx((100 + 768 + 100) / (200 + 768 + 240))
    assert short["dice"] == pytest.approx((2 / 3 + 1 + dice_c) / 3)
    assert short["box_iou"] == pytest.approx((0.5 + 1 + iou_c) / 3)  # these boxes are the masks' extents
    assert short["box_acc"] == pytest.approx(1 / 3)  # 0.5 is not > 0.5; iou_c < 0.5
    assert long["giou"] == pytest.approx(2 / 3) and long["ciou"] == pytest.approx((768 + 200) / (200 + 768 + 200))
    assert long["box_iou"] == pytest.approx(1 / 3) and long["box_acc"] == pytest.approx(1 / 3)
    assert overall["giou"] == pytest.approx((0.5 + 1 + iou_c + 0 + 1 + 1) / 6)
    assert overall["box_acc"] == pytest.approx(2 / 6)
    assert (short["absence_rate"], long["absence_rate"], overall["absence_rate"]) == (0.0, 1.0, 0.5)
    assert metrics["by_class"]["liver"]["short"]["giou"] == pytest.approx(0.75)
    assert metrics["by_class"]["kidney"]["overall"]["absence_rate"] == 0.5

    lines = [json.loads(line) for line in (tmp_path / "out" / "per_sample.jsonl").read_text().splitlines()]
    assert lines[0]["score"] == 0.8 and lines[0]["iou"] == pytest.approx(0.5)
    assert lines[1]["predicted_nothing"] and lines[1]["iou"] == 0 and lines[1]["box_iou"] == 0
    assert lines[6]["absent"] and not lines[6]["predicted_nothing"] and lines[6]["iou"] is None


def test_errors_name_the_record(dataset, tmp_path):
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(dataset[0].mask)
    with pytest.raises(DataError, match=r"data.jsonl:1: mask \(48, 65\) and image \(48, 64\) differ"):
        evaluate(perfect(dataset), dataset, tmp_path / "out")
    dataset[1].image.unlink()
    with pytest.raises(DataError, match="data.jsonl:2: cannot read the image"):
        evaluate(perfect(dataset), dataset[1:], tmp_path / "out")
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate(perfect(dataset), dataset, tmp_path / "out", mode="slow")
    with pytest.raises(ValueError, match="no records"):
        evaluate(perfect(dataset), [], tmp_path / "out")


def test_real_tiny_predictor_uses_the_cache(tiny_shared, dataset, tmp_path):
    predictor = Predictor(tiny_shared, score_threshold=0.0)
    metrics = evaluate(predictor, dataset, tmp_path / "out")
    # short misses the cache, long on the same pixels hits it
    assert metrics["cache"] == {"hits": 4, "misses": 4}
    assert metrics["queries"] == 8 and metrics["overall"]["count"] == 6
    for key in ("giou", "ciou", "dice", "box_iou", "box_acc"):
        assert 0.0 <= metrics["overall"][key] <= 1.0
    assert metrics["overall"]["absence_rate"] == 0.0  # threshold 0: an entity for every query
    assert metrics["seconds_per_query"] > 0
    with Image.open(tmp_path / "out" / "worst_cases.png") as grid:
        assert grid.size == grid_size(6)
    assert len((tmp_path / "out" / "per_sample.jsonl").read_text().splitlines()) == 8


def test_only_absent_records_give_a_placeholder_grid(dataset, tmp_path):
    metrics = evaluate(ScriptedPredictor({}), dataset[3:], tmp_path / "out")
    assert metrics["overall"]["giou"] is None and metrics["overall"]["absence_rate"] == 1.0
    with Image.open(tmp_path / "out" / "worst_cases.png") as grid:
        assert grid.size == grid_size(1)


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *argv])
    return args.run(args)


def test_command_prints_a_table(dataset, tmp_path, monkeypatch, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text("{}\n")
    monkeypatch.setattr(evaluate_command, "read_mlmr_jsonl", lambda path, validate=True: list(dataset))  # the real reader is tested elsewhere
    out = tmp_path / "eval"
    assert run_command(["--data", str(data), "--out", str(out), "--threshold", "0", "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 records, 6 queries, fast mode" in printed
    for row in ("overall", "short", "long", "class liver", "class kidney", "modality CT", "gIoU", "Acc@0.5"):
        assert row in printed
    assert f"metrics in {out / 'metrics.json'}" in printed
    assert json.loads((out / "metrics.json").read_text())["records"] == 3


def test_command_errors_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        run_command(["--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="is a folder"):
        run_command(["--data", str(tmp_path), "--out", str(tmp_path / "o")])
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(ValueError, match="--limit must be at least 1"):
        run_command(["--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"), "--limit", "0"])


def test_mask_quality_is_reported_by_how_well_it_ranks_the_masks():
    samples = [{"mask_quality": q, "iou": i} for q, i in [(0.9, 0.8), (0.5, 0.4), (0.2, 0.1), (0.7, 0.9)]]
    assert quality_iou_correlation(samples) == pytest.approx(0.8)
    samples.append({"mask_quality": None, "iou": 0.0})  # nothing predicted: no quality to rank
    assert quality_iou_correlation(samples) == pytest.approx(0.8)
    assert quality_iou_correlation(samples[:2]) is None
