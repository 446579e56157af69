"""Evaluation metrics for reasoning segmentation and detection (pure numpy).

Conventions (the reference ``evaluate.py``, Tables 1-2 of the MediSee paper):

- Masks are compared as booleans (anything non-zero is foreground); prediction and ground
  truth must have the same shape.
- Per-mask IoU = |P & G| / |P | G|, and Dice = 2 |P & G| / (|P| + |G|); both are 1.0 when
  prediction and ground truth are both empty (nothing to find, nothing found) and 0.0 when
  exactly one of them is empty.
- gIoU = the mean of the per-mask IoUs; cIoU = (sum of intersections) / (sum of unions)
  over all masks, so large targets weigh more; Dice (dataset) = the mean of per-mask Dice.
- Boxes are (x0, y0, x1, y1) with x along columns, in any unit (both boxes in the same
  one). A box with x1 <= x0 or y1 <= y0 is degenerate and has IoU 0 with everything,
  including itself.
- Detection Acc = the fraction of targets whose predicted box has IoU > 0.5 (strictly);
  a missing prediction counts as IoU 0.
- Accumulators return ``nan`` from their metric methods while they have seen nothing;
  ``summary()`` reports those as ``None`` so it can be written as JSON.

Every accumulator has ``add(...)`` (returns the per-sample value(s) it recorded), ``count``
and ``summary() -> dict[str, float | int | None]``; further metrics (AP50, mIoU, grounding
F1, text metrics) plug in as more accumulators with the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ACC_IOU_THRESHOLD = 0.5

Box = Sequence[float]


def _as_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred).astype(bool, copy=False), np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction mask {pred.shape} and ground-truth mask {gt.shape} differ in shape")
    return pred, gt


def mask_intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(|P & G|, |P | G|)`` of two same-shaped masks."""
    pred, gt = _as_masks(pred, gt)
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two masks; 1.0 when both are empty."""
    inter, union = mask_intersection_union(pred, gt)
    return 1.0 if union == 0 else inter / union


def mask_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2 |P & G| / (|P| + |G|); 1.0 when both are empty."""
    pred, gt = _as_masks(pred, gt)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & gt)) / total


def box_area(box: Box) -> float:
    """Area of an xyxy box; 0 when degenerate (x1 <= x0 or y1 <= y0)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def box_iou(a: Box | None, b: Box | None) -> float:
    """IoU of two xyxy boxes; 0.0 when they do not overlap, when either is degenerate
    (zero width or height) or missing (``None``)."""
    if a is None or b is None:
        return 0.0
    if len(a) != 4 or len(b) != 4:
        raise ValueError(f"boxes need 4 numbers x0,y0,x1,y1; got {len(a)} and {len(b)}")
    area_a, area_b = box_area(a), box_area(b)
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    ix0, iy0 = max(float(a[0]), float(b[0])), max(float(a[1]), float(b[1]))
    ix1, iy1 = min(float(a[2]), float(b[2])), min(float(a[3]), float(b[3]))
    inter = max(ix1 - ix0, 0.0) * max(iy1 - iy0, 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0.0 else 0.0


def mask_to_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight xyxy pixel box of a mask (x1, y1 exclusive: a single pixel at (x, y) gives
    (x, y, x+1, y+1)); ``None`` for an empty mask."""
    rows, cols = np.nonzero(np.asarray(mask))
    if rows.size == 0:
        return None
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


class SegmentationAccumulator:
    """gIoU, cIoU and Dice over a set of (prediction, ground truth) mask pairs."""

    def __init__(self) -> None:
        self.ious: list[float] = []
        self.dices: list[float] = []
        self.intersection = 0
        self.union = 0

    @property
    def count(self) -> int:
        return len(self.ious)

    def add(self, pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[float, float]:
        """Record one pair; returns its ``(iou, dice)``."""
        pred, gt = _as_masks(pred_mask, gt_mask)
        inter, union = mask_intersection_union(pred, gt)
        iou = 1.0 if union == 0 else inter / union
        dice = mask_dice(pred, gt)
        self.ious.append(iou)
        self.dices.append(dice)
        self.intersection += inter
        self.union += union
        return iou, dice

    def giou(self) -> float:
        """Mean per-mask IoU."""
        return _mean(self.ious)

    def ciou(self) -> float:
        """Sum of intersections / sum of unions; 1.0 when every pair was empty/empty."""
        if not self.ious:
            return math.nan
        return 1.0 if self.union == 0 else self.intersection / self.union

    def dice(self) -> float:
        """Mean per-mask Dice."""
        return _mean(self.dices)

    def summary(self) -> dict[str, float | int | None]:
        return {"giou": _json_number(self.giou()), "ciou": _json_number(self.ciou()),
                "dice": _json_number(self.dice()), "count": self.count}


class DetectionAccumulator:
    """Mean box IoU and Acc (fraction with IoU > 0.5); a missing prediction is IoU 0."""

    def __init__(self, threshold: float = ACC_IOU_THRESHOLD) -> None:
        self.threshold = threshold
        self.ious: list[float] = []

    @property
    def count(self) -> int:
        return len(self.ious)

    def add(self, pred_box: Box | None, gt_box: Box) -> float:
        """Record one target; returns its box IoU."""
        iou = box_iou(pred_box, gt_box)
        self.ious.append(iou)
        return iou

    def mean_iou(self) -> float:
        return _mean(self.ious)

    def acc(self) -> float:
        """Fraction of targets whose box IoU is strictly above ``threshold``."""
        return _mean([1.0 if iou > self.threshold else 0.0 for iou in self.ious])

    def summary(self) -> dict[str, float | int | None]:
        return {"box_iou": _json_number(self.mean_iou()), "box_acc": _json_number(self.acc()),
                "box_count": self.count}


class AbsenceAccumulator:
    """For targets absent from the image: the fraction of answers that returned no entity
    (the right answer); higher is better."""

    def __init__(self) -> None:
        self.outcomes: list[bool] = []

    @property
    def count(self) -> int:
        return len(self.outcomes)

    def add(self, predicted_nothing: bool) -> bool:
        self.outcomes.append(bool(predicted_nothing))
        return bool(predicted_nothing)

    def rate(self) -> float:
        return _mean([1.0 if v else 0.0 for v in self.outcomes])

    def summary(self) -> dict[str, float | int | None]:
        return {"absence_rate": _json_number(self.rate()), "absent_count": self.count}
