"""Active-learning uncertainty: the formula, which slices it looks at, and a real predictor run."""

from __future__ import annotations

import numpy as np
import pytest

from medisee.data.demo.ct_phantom import generate_phantom
from medisee.predictor import Entity, Prediction, PredictionInputError, Predictor
from medisee.uncertainty import image_uncertainty, middle_slices, quality_uncertainty, score_uncertainty


@pytest.fixture(scope="module")
def volume():
    return generate_phantom(5, shape=(12, 64, 64), spacing=(6.0, 6.0, 16.0)).to_medical_image()


class FixedPredictor:
    """Answers every slice with one entity of the given score and mask quality (None: no entity);
    records the threshold it was called with."""

    def __init__(self, score: float | None, quality: float = 0.8) -> None:
        self.score, self.quality, self.score_threshold, self.seen = score, quality, 0.5, []

    def predict_slices(self, images, query, mode="full", **_):
        self.seen.append((len(images), mode, self.score_threshold))
        if self.score is None:
            return [Prediction("", []) for _ in images]
        mask = np.ones(images[0].shape[:2], bool)
        return [Prediction("", [Entity(query, mask, (0, 0, 1, 1), self.score, self.quality)]) for _ in images]


@pytest.mark.parametrize("p, expected", [(0.5, 1.0), (0.0, 0.0), (1.0, 0.0), (0.25, 0.5), (0.9, 0.2), (1.5, 0.0), (-0.2, 0.0)])
def test_score_uncertainty_peaks_at_one_half(p, expected):
    assert score_uncertainty(p) == pytest.approx(expected)


@pytest.mark.parametrize("q, expected", [(1.0, 0.0), (0.0, 1.0), (0.7, 0.3), (1.3, 0.0), (-0.5, 1.0)])
def test_quality_uncertainty_is_one_minus_the_clipped_estimate(q, expected):
    assert quality_uncertainty(q) == pytest.approx(expected)


def test_slices_are_evenly_spaced_through_the_middle_half():
    assert middle_slices(40, 3) == [10, 20, 29]
    assert middle_slices(10, 1) == [5] and middle_slices(1, 3) == [0] and middle_slices(2, 3) == [0, 1]
    assert middle_slices(100, 5) == [25, 37, 50, 62, 74]
    with pytest.raises(ValueError):
        middle_slices(10, 0)


def test_a_score_near_one_half_is_more_uncertain_than_a_confident_yes_or_no(volume):
    values = {p: image_uncertainty(FixedPredictor(p), volume, "Where is the liver?").value for p in (0.02, 0.5, 0.55, 0.98)}
    assert values[0.5] > values[0.55] > values[0.98] and values[0.5] > values[0.02]
    result = image_uncertainty(FixedPredictor(0.5, quality=0.6), volume, "Where is the liver?")
    assert result.value == pytest.approx((1.0 + 0.4) / 2) and result.score_part == 1.0
    assert result.quality_part == pytest.approx(0.4)
    assert [s.index for s in result.slices] == [3, 6, 8] and result.axis == "axial"


def test_keeps_low_scores_without_changing_the_callers_predictor(volume):
    predictor = FixedPredictor(0.1)
    image_uncertainty(predictor, volume, "Where is the liver?", slices=2)
    assert predictor.seen == [(2, "fast", 0.0)]  # fast mode, every entity kept ...
    assert predictor.score_threshold == 0.5  # ... by a copy: the caller's threshold is untouched
    empty = image_uncertainty(FixedPredictor(None), volume, "Where is the liver?")
    assert empty.value == 1.0 and all(s.score is None and s.value == 1.0 for s in empty.slices)


def test_real_predictor_is_deterministic_cheap_and_bounded(tiny_shared, volume):
    predictor = Predictor(tiny_shared, score_threshold=0.9, cache_size=16)
    first = image_uncertainty(predictor, volume, "Which organ stores glycogen?", slices=3)
    misses = predictor.cache.misses
    again = image_uncertainty(predictor, volume, "Which organ stores glycogen?", slices=3)
    other = image_uncertainty(predictor, volume, "Where is the spleen?", slices=3)
    assert predictor.cache.misses == misses == 3  # the slices were encoded once
    assert again == first and 0.0 <= first.value <= 1.0 and 0.0 <= other.value <= 1.0
    assert predictor.score_threshold == 0.9
    assert all(s.score is None or 0.0 <= s.score <= 1.0 for s in first.slices)
    assert first.to_dict()["slices"][0]["index"] == 3
    coronal = image_uncertainty(predictor, volume, "Where is the spleen?", axis="coronal", slices=1, window="abdomen")
    assert [s.index for s in coronal.slices] == [32] and coronal.axis == "coronal"
    with pytest.raises(PredictionInputError):
        image_uncertainty(predictor, volume, "   ")
    with pytest.raises(PredictionInputError):
        image_uncertainty(predictor, volume, "Where is the spleen?", axis="oblique")
