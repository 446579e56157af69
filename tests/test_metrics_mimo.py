"""Multi-entity metrics against values computed by hand (see each test's comment)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medisee.metrics_mimo import (
    ByPerspective,
    Entity,
    GroundingF1Accumulator,
    MaskEntityAccumulator,
    TextAccumulator,
    average_precision,
    bleu4,
    count_correct,
    match_ious,
    meteor,
    normalise_phrase,
    phrases_match,
    rouge_l,
    tokenize,
)


def strip(start: int, stop: int, width: int = 10) -> np.ndarray:
    """A 1 x width mask with pixels [start, stop) set."""
    mask = np.zeros((1, width), dtype=bool)
    mask[0, start:stop] = True
    return mask


# GT1 = pixels 0-3, GT2 = 6-9. P1 = 0-2: IoU(P1, GT1) = 3/4. P2 = 5-7: IoU(P2, GT2) = 2/5.
GT = [Entity("left kidney", strip(0, 4)), Entity("spleen", strip(6, 10))]
PRED = [Entity("Kidney, left", strip(0, 3), 0.9), Entity("spleen", strip(5, 8), 0.8)]


def test_two_predictions_two_ground_truths() -> None:
    acc = MaskEntityAccumulator()
    out = acc.add(PRED, GT)
    assert out["matched_ious"] == pytest.approx([0.75, 0.4])
    assert out["true_positive"] == [True, False]
    assert acc.miou() == pytest.approx((0.75 + 0.4) / 2)
    # ranked TP, FP: recall 0.5 at precision 1, never higher -> 101-point: 51 of 101 points at 1
    assert acc.ap50() == pytest.approx(51 / 101)
    all_point = MaskEntityAccumulator(ap_method="all")
    all_point.add(PRED, GT)
    assert all_point.ap50() == pytest.approx(0.5)
    f1 = GroundingF1Accumulator()
    assert f1.add(PRED, GT) == 1  # P1 matches phrase and IoU; P2 phrase ok but IoU 0.4
    assert (f1.precision(), f1.recall(), f1.f1()) == pytest.approx((0.5, 0.5, 0.5))


def test_ap_ranks_by_score_and_rejects_duplicates_across_images() -> None:
    acc = MaskEntityAccumulator(ap_method="all")
    # image 1: GT 0-4; P(0.9) = 0-4 IoU 1 -> TP; P(0.7) = 0-3 IoU 0.8 on the taken GT -> FP
    acc.add([Entity("x", strip(0, 5), 0.9), Entity("x", strip(0, 4), 0.7)], [Entity("x", strip(0, 5))])
    # image 2: GT 5-9, P(0.8) IoU 1 -> TP. Ranked TP TP FP: recall 1 at precision 1 -> AP 1
    acc.add([Entity("y", strip(5, 10), 0.8)], [Entity("y", strip(5, 10))])
    assert acc.ap50() == pytest.approx(1.0)
    assert acc.miou() == pytest.approx(1.0)
    # a false positive ranked first halves the precision: area 0.5 * 0.5
    assert average_precision([0.9, 0.8], [False, True], n_gt=2, method="all") == pytest.approx(0.25)
    assert average_precision([0.9, 0.8], [False, True], n_gt=2) == pytest.approx(51 * 0.5 / 101)
    # IoU exactly 0.5 counts for AP50 (>=): GT 0-3, P 0-1 -> 2/4
    half = MaskEntityAccumulator()
    assert half.add([Entity("x", strip(0, 2))], [Entity("x", strip(0, 4))])["true_positive"] == [True]


def test_miou_matches_one_to_one_and_counts_missing_entities_as_zero() -> None:
    # one prediction equal to GT1, GT2 unmatched -> (1 + 0) / 2
    assert match_ious([strip(0, 4)], [strip(0, 4), strip(6, 10)]) == [1.0, 0.0]
    # Hungarian, not greedy: A = 0-5 overlaps GT1 (0-3, IoU 4/6) and GT2 (4-7, IoU 2/8);
    # B = 2-7 overlaps GT1 (IoU 2/8) and GT2 (IoU 4/6). Best total: A-GT1, B-GT2.
    assert match_ious([strip(0, 6), strip(2, 8)], [strip(0, 4), strip(4, 8)]) == pytest.approx([4 / 6, 4 / 6])
    assert match_ious([strip(0, 4)], []) == []


def test_mask_metrics_empty_cases() -> None:
    acc = MaskEntityAccumulator()
    assert acc.summary()["miou"] is None and acc.summary()["ap50"] is None
    acc.add([], [])  # nothing expected, nothing predicted: no entity to average
    assert acc.summary()["miou"] is None and acc.summary()["ap50"] is None
    acc.add([], [Entity("x", strip(0, 4))])  # a missed entity: IoU 0, AP 0
    assert acc.miou() == 0.0 and acc.ap50() == 0.0
    with pytest.raises(ValueError):
        MaskEntityAccumulator().add([Entity("x", strip(0, 4, width=8))], [Entity("x", strip(0, 4))])


def test_phrase_rules() -> None:
    assert normalise_phrase("  The   Small  lesion. ") == "small lesion"
    assert phrases_match("the Left_Kidney", "left kidney")
    assert phrases_match("Kidney, left", "left kidney")  # comma-reversed order
    assert phrases_match("kidney left", "left renal parenchyma")  # knowledge-base synonyms
    assert phrases_match("Hepar", "the liver")
    assert phrases_match("gray matter", "grey matter")
    assert not phrases_match("left kidney", "right kidney")
    assert not phrases_match("", "")  # an empty phrase names nothing
    assert phrases_match("an unknown mass", "Unknown mass")  # unknown terms: normalised text


def test_grounding_f1_rules() -> None:
    gt = [Entity("liver", strip(0, 4)), Entity("spleen", strip(6, 10))]
    # right masks, one wrong phrase -> 1 correct
    assert count_correct([Entity("liver", strip(0, 4)), Entity("stomach", strip(6, 10))], gt) == 1
    # IoU exactly 0.5 is not enough (strictly greater): GT 0-3 vs 0-1
    assert count_correct([Entity("liver", strip(0, 2))], gt) == 0
    # two predictions of the same entity count once (one-to-one)
    assert count_correct([Entity("liver", strip(0, 4)), Entity("liver", strip(0, 4))], gt) == 1


def test_grounding_f1_micro_average_and_empty_cases() -> None:
    acc = GroundingF1Accumulator()
    assert acc.summary()["grounding_f1"] is None
    acc.add([], [])
    assert (acc.precision(), acc.recall(), acc.f1()) == (1.0, 1.0, 1.0)  # nothing to find, nothing found
    acc.add([Entity("liver", strip(0, 4))], [Entity("liver", strip(0, 4)), Entity("spleen", strip(6, 10))])
    acc.add([Entity("heart", strip(0, 4)), Entity("aorta", strip(5, 6))], [])
    # totals: 1 correct, 3 predicted, 2 expected -> P 1/3, R 1/2, F1 = 2/5
    assert acc.precision() == pytest.approx(1 / 3)
    assert acc.recall() == pytest.approx(1 / 2)
    assert acc.f1() == pytest.approx(0.4)
    only_pred = GroundingF1Accumulator()
    only_pred.add([Entity("liver", strip(0, 4))], [])
    assert (only_pred.precision(), only_pred.recall(), only_pred.f1()) == (0.0, 0.0, 0.0)


def test_by_perspective_splits_and_keeps_the_overall_micro_average() -> None:
    acc = ByPerspective(GroundingF1Accumulator)
    liver = [Entity("liver", strip(0, 4))]
    acc.add("I", liver, liver)
    acc.add("III", [Entity("spleen", strip(0, 4))], liver)
    acc.add(None, liver, liver)  # counted overall only
    summary = acc.summary()
    assert list(summary) == ["all", "I", "III"]
    assert summary["I"]["grounding_f1"] == 1.0
    assert summary["III"]["grounding_f1"] == 0.0
    assert summary["all"]["grounding_correct"] == 2 and summary["all"]["grounding_gt"] == 3
    assert summary["all"]["grounding_f1"] == pytest.approx(2 / 3)


def test_tokenize() -> None:
    assert tokenize("The LIVER, in the upper-right (RUQ) abdomen; 2 cm.") == [
        "the", "liver", "in", "the", "upper", "right", "ruq", "abdomen", "2", "cm"]


def test_bleu4() -> None:
    assert bleu4(["The liver is large."], ["the liver is large"]) == pytest.approx(1.0)
    # hyp a b c d e vs ref a b c d f: p1..p4 = 4/5, 3/4, 2/3, 1/2, equal lengths (BP 1)
    assert bleu4(["a b c d e"], ["a b c d f"]) == pytest.approx((0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25)
    # all n-grams match but the answer is 4 tokens for a 6-token reference: BP = exp(1 - 6/4)
    assert bleu4(["a b c d"], ["a b c d e f"]) == pytest.approx(math.exp(-0.5))
    # corpus level: n-gram counts and lengths are summed over answers before the ratios, so
    # the two answers above give p1..p4 = 8/9, 6/7, 4/5, 2/3 and BP = exp(1 - 11/9)
    expected = (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25 * math.exp(1 - 11 / 9)
    assert bleu4(["a b c d e", "a b c d"], ["a b c d f", "a b c d e f"]) == pytest.approx(expected)
    assert math.isnan(bleu4([], []))
    assert bleu4([""], ["the liver"]) == 0.0
    with pytest.raises(ValueError):
        bleu4(["a"], [])


def test_rouge_l() -> None:
    assert rouge_l("the liver is large", "The liver is large.") == pytest.approx(1.0)
    # LCS(a b c d, a c e d f) = a c d = 3: P = 3/4, R = 3/5, F = 2PR / (P + R) = 2/3
    assert rouge_l("a b c d", "a c e d f") == pytest.approx(2 / 3)
    assert rouge_l("x y", "a b") == 0.0
    assert rouge_l("", "") == 1.0 and rouge_l("", "a") == 0.0


def test_meteor_without_synonyms() -> None:
    # identical 4 tokens: F = 1, one chunk: penalty 0.5 * (1/4)^3
    assert meteor("the liver is large", "the liver is large") == pytest.approx(1 - 0.5 / 64)
    assert meteor("a b c", "x y z") == 0.0
    # Porter stems match ("kidneys" ~ "kidney"), WordNet synonyms do not ("big" vs "large")
    assert meteor("kidneys", "kidney") == pytest.approx(1 - 0.5)
    assert meteor("big", "large") == 0.0
    assert meteor("", "") == 1.0 and meteor("a", "") == 0.0


def test_text_accumulator() -> None:
    acc = TextAccumulator()
    assert acc.summary() == {"bleu4": None, "rouge_l": None, "meteor": None, "answers": 0}
    assert acc.add("a b c d", "a c e d f")[0] == pytest.approx(2 / 3)
    acc.add("the liver is large", "the liver is large")
    summary = acc.summary()
    assert summary["answers"] == 2
    assert summary["rouge_l"] == pytest.approx((2 / 3 + 1) / 2)
    assert 0.0 < summary["bleu4"] < 1.0
    assert 0.0 < summary["meteor"] < 1.0
