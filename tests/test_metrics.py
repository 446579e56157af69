"""Metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medisee.metrics import (
    AbsenceAccumulator,
    DetectionAccumulator,
    SegmentationAccumulator,
    box_iou,
    mask_dice,
    mask_intersection_union,
    mask_iou,
    mask_to_box,
)


def mask(rows: list[str]) -> np.ndarray:
    """A bool mask drawn with '#' (target) and '.' (background)."""
    return np.array([[c == "#" for c in row] for row in rows])


# 4x4: P has 4 pixels (2x2 top-left), G has 6 pixels (2x3 top-left), overlap 4
P = mask(["##..", "##..", "....", "...."])
G = mask(["###.", "###.", "....", "...."])
EMPTY = np.zeros((4, 4), bool)


def test_mask_iou_and_dice_by_hand():
    assert mask_intersection_union(P, G) == (4, 6)
    assert mask_iou(P, G) == pytest.approx(4 / 6)
    assert mask_dice(P, G) == pytest.approx(2 * 4 / (4 + 6))
    assert mask_iou(P, P) == 1.0 and mask_dice(P, P) == 1.0


def test_disjoint_masks_score_zero():
    other = mask(["....", "....", "..##", "..##"])
    assert mask_iou(P, other) == 0.0 and mask_dice(P, other) == 0.0


def test_empty_masks():
    assert mask_iou(EMPTY, EMPTY) == 1.0 and mask_dice(EMPTY, EMPTY) == 1.0
    assert mask_iou(EMPTY, G) == 0.0 and mask_dice(EMPTY, G) == 0.0  # missed target
    assert mask_iou(P, EMPTY) == 0.0 and mask_dice(P, EMPTY) == 0.0  # false alarm


def test_nonzero_values_count_as_foreground_and_shapes_must_match():
    assert mask_iou(P.astype(np.uint8) * 255, G.astype(np.int64)) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(P, np.zeros((4, 5), bool))


def test_giou_and_ciou_differ_when_sizes_differ():
    acc = SegmentationAccumulator()
    # a small target missed by half: inter 1, union 2 -> IoU 0.5
    small_gt = mask(["##..", "....", "....", "...."])
    small_pred = mask(["#...", "....", "....", "...."])
    # a large target found exactly: inter 16, union 16 -> IoU 1
    full = np.ones((4, 4), bool)
    assert acc.add(small_pred, small_gt) == pytest.approx((0.5, 2 * 1 / 3))
    assert acc.add(full, full) == (1.0, 1.0)
    assert acc.count == 2
    assert acc.giou() == pytest.approx((0.5 + 1.0) / 2)
    assert acc.ciou() == pytest.approx((1 + 16) / (2 + 16))
    assert acc.dice() == pytest.approx((2 / 3 + 1.0) / 2)
    assert acc.summary() == pytest.approx({"giou": 0.75, "ciou": 17 / 18, "dice": (2 / 3 + 1) / 2, "count": 2})


def test_segmentation_accumulator_empty_pairs_and_no_samples():
    acc = SegmentationAccumulator()
    assert math.isnan(acc.giou()) and math.isnan(acc.ciou()) and math.isnan(acc.dice())
    assert acc.summary() == {"giou": None, "ciou": None, "dice": None, "count": 0}
    acc.add(EMPTY, EMPTY)
    assert (acc.giou(), acc.ciou(), acc.dice()) == (1.0, 1.0, 1.0)
    acc.add(EMPTY, G)  # missed: IoU 0, adds 6 to the union
    assert acc.giou() == 0.5 and acc.ciou() == 0.0 and acc.dice() == 0.5


def test_box_iou_by_hand():
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 4, 2], [0, 0, 2, 2]) == pytest.approx(0.5)
    assert box_iou((10.0, 20.0, 30.0, 40.0), (10.0, 20.0, 30.0, 40.0)) == 1.0
    assert box_iou([0, 0, 1, 1], [1, 0, 2, 1]) == 0.0  # touching edges
    assert box_iou([0, 0, 1, 1], [5, 5, 6, 6]) == 0.0  # apart


def test_degenerate_and_missing_boxes():
    assert box_iou([1, 1, 1, 3], [0, 0, 2, 2]) == 0.0  # zero width
    assert box_iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0  # a point, even with itself
    assert box_iou([2, 2, 0, 0], [0, 0, 2, 2]) == 0.0  # reversed corners are degenerate
    assert box_iou(None, [0, 0, 2, 2]) == 0.0
    with pytest.raises(ValueError, match="4 numbers"):
        box_iou([0, 0, 1], [0, 0, 1, 1])


def test_mask_to_box_is_exclusive_at_the_far_edge():
    assert mask_to_box(G) == (0.0, 0.0, 3.0, 2.0)
    assert mask_to_box(mask(["....", "..#.", "....", "...."])) == (2.0, 1.0, 3.0, 2.0)
    assert mask_to_box(EMPTY) is None


def test_detection_accumulator_acc_is_strictly_above_half():
    acc = DetectionAccumulator()
    assert acc.add([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert acc.add([0, 0, 4, 2], [0, 0, 2, 2]) == 0.5  # exactly 0.5 does not count
    assert acc.add(None, [0, 0, 2, 2]) == 0.0  # nothing predicted
    assert acc.add([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert acc.count == 4
    assert acc.mean_iou() == pytest.approx((1 + 0.5 + 0 + 1 / 7) / 4)
    assert acc.acc() == 0.25
    assert acc.summary() == pytest.approx({"box_iou": (1.5 + 1 / 7) / 4, "box_acc": 0.25, "box_count": 4})
    assert DetectionAccumulator().summary() == {"box_iou": None, "box_acc": None, "box_count": 0}


def test_absence_accumulator():
    acc = AbsenceAccumulator()
    assert acc.summary() == {"absence_rate": None, "absent_count": 0}
    for nothing in (True, True, False, True):
        acc.add(nothing)
    assert acc.rate() == 0.75 and acc.count == 4
    assert acc.summary() == {"absence_rate": 0.75, "absent_count": 4}
