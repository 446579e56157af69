"""Evaluation of a predictor on MLMR-SD-style records (Tables 1-2 of the MediSee paper).

One process, every record exactly once per query kind (``short`` then ``long``, on the same
pixels so the predictor's embedding cache answers the second one), none of the reference's
duplicate padding. For each query the entity with the highest score is the prediction; an
empty entity list means "predicted nothing" (empty mask, no box).

Present targets feed segmentation (gIoU, cIoU, Dice) and detection (box IoU, Acc@0.5);
absent targets (``record.absent``) feed only the absence rate: the fraction of their queries
answered with no entity. Figures are reported overall, by query kind, by class and by
modality (``record.extra["modality"]`` when present).

Outputs in ``out_dir``: ``metrics.json`` (see :func:`evaluate`), ``per_sample.jsonl`` (one
line per query) and ``worst_cases.png`` (the lowest-IoU present cases, ground truth in
green, prediction in red).
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from medisee.atomic import write_text
from medisee.data.loader import load_image, load_mask
from medisee.data.records import DataError, Record
from medisee.metrics import (
    AbsenceAccumulator,
    DetectionAccumulator,
    SegmentationAccumulator,
    mask_to_box,
)
from medisee.predictor import MODES, Entity, PredictionInputError

from . import report

log = logging.getLogger("medisee.evaluate")

KINDS = ("short", "long")
SCHEMA_VERSION = 1

Progress = Callable[[int, int], None]


def gt_box_pixels(record: Record, mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """The ground-truth box in pixels: the record's normalised bbox, else the mask's extent."""
    height, width = mask.shape
    if record.bbox is not None:
        x0, y0, x1, y1 = (float(v) for v in record.bbox)
        return x0 * width, y0 * height, x1 * width, y1 * height
    return mask_to_box(mask)


def best_entity(entities: list[Entity]) -> Entity | None:
    return max(entities, key=lambda e: e.score) if entities else None


# -- aggregation ----------------------------------------------------------------------------
@dataclass
class _Group:
    """All metrics of one slice of the evaluation (overall, one kind, one class, ...)."""

    segmentation: SegmentationAccumulator = field(default_factory=SegmentationAccumulator)
    detection: DetectionAccumulator = field(default_factory=DetectionAccumulator)
    absence: AbsenceAccumulator = field(default_factory=AbsenceAccumulator)
    seconds: float = 0.0
    queries: int = 0

    def summary(self) -> dict:
        return {
            **self.segmentation.summary(),
            **self.detection.summary(),
            **self.absence.summary(),
            "queries": self.queries,
            "seconds_per_query": self.seconds / self.queries if self.queries else None,
        }


class _Split:
    """overall / short / long for one set of records."""

    def __init__(self) -> None:
        self.groups = {"overall": _Group(), **{kind: _Group() for kind in KINDS}}

    def targets(self, kind: str) -> list[_Group]:
        return [self.groups["overall"], self.groups[kind]]

    def summary(self) -> dict:
        return {name: group.summary() for name, group in self.groups.items()}


@dataclass(order=True)
class _Worst:
    neg_iou: float
    order: int
    tile: Image.Image = field(compare=False)


# -- the evaluation -------------------------------------------------------------------------
def evaluate(predictor, records: list[Record], out_dir: Path, mode: str = "fast",
             progress: Progress | None = None) -> dict:
    """Run ``predictor`` on every record's short and long query and write the results.

    ``predictor`` needs ``predict(image, query, mode=...) -> Prediction`` (a
    :class:`medisee.predictor.Predictor`); ``progress(done, total)`` is called after each
    record. Returns the dict written to ``out_dir/metrics.json``::

        {"schema": 1, "mode", "records", "present_records", "absent_records", "queries",
         "skipped_queries", "seconds_per_query", "total_seconds",
         "cache": {"hits", "misses"} | None,        # the predictor's embedding cache, this run
         "mask_quality_iou_spearman": float | None, # does a higher mask_quality mean a better mask
         "overall": G, "short": G, "long": G,        # G: see below
         "by_class":    {class_text: {"overall": G, "short": G, "long": G}},
         "by_modality": {modality:   {"overall": G, "short": G, "long": G}},
         "files": {"per_sample", "worst_cases"}}

    where each group ``G`` is ``{"giou", "ciou", "dice", "count", "box_iou", "box_acc",
    "box_count", "absence_rate", "absent_count", "queries", "seconds_per_query"}``: ``count``
    queries on present targets (segmentation), ``box_count`` of those with a ground-truth box,
    ``absent_count`` queries on absent targets; a metric with no sample is ``None``.
    A record whose image or mask cannot be read raises :class:`DataError` ("source: why").
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    records = list(records)
    if not records:
        raise ValueError("no records to evaluate")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tally = _Tally()
    cache = getattr(predictor, "cache", None)
    hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
    started = time.perf_counter()
    for done, record in enumerate(records, start=1):
        truth = _truth(record)
        splits = tally.splits(record)
        for kind in KINDS:
            query = getattr(record, kind) or ""
            if not query.strip():
                tally.skipped += 1
                log.debug("%s: no %s query, skipped", record.source, kind)
                continue
            tick = time.perf_counter()
            try:
                prediction = predictor.predict(truth.image, query, mode=mode)
            except PredictionInputError as err:
                raise DataError(f"{record.source}: {err}") from err
            tally.add(record, kind, query, truth, prediction, time.perf_counter() - tick, splits)
        if progress is not None:
            progress(done, len(records))

    total = time.perf_counter() - started
    cache_counts = {"hits": cache.hits - hits0, "misses": cache.misses - misses0} if cache is not None else None
    metrics = _metrics(tally, records, mode, total, cache_counts)
    write_text(out_dir / "per_sample.jsonl", "".join(json.dumps(s) + "\n" for s in tally.samples))
    worst = sorted(tally.worst, key=lambda w: (-w.neg_iou, -w.order))
    report.save_png(report.worst_cases_grid([w.tile for w in worst]), out_dir / "worst_cases.png")
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


@dataclass
class _Truth:
    """One record's pixels and ground truth (no mask or box for an absent target)."""

    image: np.ndarray
    mask: np.ndarray | None
    box: tuple[float, float, float, float] | None


def _truth(record: Record) -> _Truth:
    image = load_image(record)
    gt_mask = gt_box = None
    if not record.absent:
        if record.mask is None:
            raise DataError(f"{record.source}: a present target needs a mask")
        gt_mask = load_mask(record)
        if gt_mask.shape != image.shape[:2]:
            raise DataError(f"{record.source}: mask {gt_mask.shape} and image {image.shape[:2]} differ in size")
        gt_box = gt_box_pixels(record, gt_mask)
    return _Truth(image, gt_mask, gt_box)


class _Tally:
    """What one evaluation accumulates: the groups' metrics, one sample per query, the worst cases."""

    def __init__(self) -> None:
        self.overall = _Split()
        self.by_class: dict[str, _Split] = {}
        self.by_modality: dict[str, _Split] = {}
        self.worst: list[_Worst] = []  # max-heap on IoU (stored negated) of the report.WORST_CASES lowest
        self.samples: list[dict] = []
        self.skipped = 0

    def splits(self, record: Record) -> list[_Split]:
        """The splits a record counts in: overall, its class and its modality (when known)."""
        splits = [self.overall, self.by_class.setdefault(record.class_text, _Split())]
        modality = record.extra.get("modality")
        if modality:
            splits.append(self.by_modality.setdefault(str(modality), _Split()))
        return splits

    def add(self, record: Record, kind: str, query: str, truth: _Truth, prediction, seconds: float,
            splits: list[_Split]) -> None:
        """Score one query's prediction against the record's truth."""
        best = best_entity(prediction.entities)
        groups = [g for split in splits for g in split.targets(kind)]
        sample = {
            "source": record.source, "image": str(record.image), "class": record.class_text, "kind": kind,
            "modality": record.extra.get("modality"), "query": query, "absent": bool(record.absent),
            "predicted_nothing": best is None, "score": None if best is None else float(best.score),
            "mask_quality": None if best is None else float(best.mask_quality),
            "iou": None, "dice": None, "box_iou": None, "seconds": round(seconds, 4),
        }
        for group in groups:
            group.seconds += seconds
            group.queries += 1
        if record.absent:
            for group in groups:
                group.absence.add(best is None)
        else:
            sample.update(self._present(record, kind, query, truth, best, groups))
        self.samples.append(sample)

    def _present(self, record: Record, kind: str, query: str, truth: _Truth, best: Entity | None,
                 groups: list[_Group]) -> dict:
        """Segmentation and detection of a present target; its IoU, Dice and box IoU."""
        gt_mask, gt_box = truth.mask, truth.box
        pred_mask = np.zeros_like(gt_mask) if best is None else np.asarray(best.mask, dtype=bool)
        if pred_mask.shape != gt_mask.shape:
            raise ValueError(f"{record.source}: the predictor returned a {pred_mask.shape} mask "
                             f"for a {gt_mask.shape} image")
        pred_box = None if best is None else best.box
        for group in groups:
            iou, dice = group.segmentation.add(pred_mask, gt_mask)
            if gt_box is not None:
                box = group.detection.add(pred_box, gt_box)
        _keep_worst(self.worst, len(self.samples), iou, lambda: report.tile(
            truth.image, gt_mask, pred_mask, gt_box, pred_box,
            [f"{record.class_text} ({kind})",
             f"IoU {iou:.2f}  Dice {dice:.2f}  box " + (f"{box:.2f}" if gt_box is not None else "-")
             + ("  [nothing]" if best is None else ""),
             query]))
        return {"iou": iou, "dice": dice, "box_iou": box if gt_box is not None else None}


def _metrics(tally: _Tally, records: list[Record], mode: str, total: float, cache_counts: dict | None) -> dict:
    queries = len(tally.samples)
    return {
        "schema": SCHEMA_VERSION,
        "mode": mode,
        "records": len(records),
        "present_records": sum(not r.absent for r in records),
        "absent_records": sum(bool(r.absent) for r in records),
        "queries": queries,
        "skipped_queries": tally.skipped,
        "seconds_per_query": tally.overall.groups["overall"].seconds / queries if queries else None,
        "total_seconds": round(total, 3),
        "cache": cache_counts,
        "mask_quality_iou_spearman": quality_iou_correlation(tally.samples),
        **tally.overall.summary(),
        "by_class": {name: split.summary() for name, split in sorted(tally.by_class.items())},
        "by_modality": {name: split.summary() for name, split in sorted(tally.by_modality.items())},
        "files": {"per_sample": "per_sample.jsonl", "worst_cases": "worst_cases.png"},
    }


def quality_iou_correlation(samples: list[dict]) -> float | None:
    """Spearman's rank correlation of the reported ``mask_quality`` with the true IoU, over
    the present targets that got a mask: whether a higher quality means a better mask."""
    pairs = [(s["mask_quality"], s["iou"]) for s in samples if s["iou"] is not None and s["mask_quality"] is not None]
    if len(pairs) < 3 or len({q for q, _ in pairs}) < 2 or len({i for _, i in pairs}) < 2:
        return None
    quality, iou = zip(*pairs)
    return float(spearmanr(quality, iou).statistic)


def _keep_worst(heap: list[_Worst], order: int, iou: float, render: Callable[[], Image.Image]) -> None:
    """Keep the ``report.WORST_CASES`` lowest-IoU cases (earliest first among ties); render lazily."""
    entry_key = (-iou, -order)
    if len(heap) < report.WORST_CASES:
        heapq.heappush(heap, _Worst(-iou, -order, render()))
    elif entry_key > (heap[0].neg_iou, heap[0].order):  # lower IoU (or as low, earlier) than the best kept
        heapq.heapreplace(heap, _Worst(-iou, -order, render()))


# -- outputs --------------------------------------------------------------------------------
