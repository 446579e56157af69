"""How unsure the model is about one question on one study: the active-learning signal.

Labelling effort is best spent where the model hesitates. Two signals, both in [0, 1]:

* the grounding score ``p`` (the probability of the answer leading to the mask): a model
  that is sure says yes (``p`` near 1) or no (near 0), so ``1 - |2p - 1|`` peaks at 0.5;
* the mask decoder's own IoU estimate ``q`` (SAM's quality head): ``1 - q``.

A slice's uncertainty is their mean; the study's is the mean over a few slices evenly
spaced through the middle half of the volume (where the anatomy of interest usually is,
and cheap: ``fast`` mode, one forward pass per slice, encodings cached by the predictor).
The score threshold is 0 so a low-confidence entity still reports its score. A slice whose
mask comes out empty has nothing to rate: it counts as fully uncertain (``p`` and ``q``
are then ``None``), since the model grounded something it could not draw.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from .imaging import MedicalImage, extract_slice, to_uint8
from .study import parse_window, resolve_axis


@dataclass
class SliceUncertainty:
    index: int
    score: float | None  # grounding score p of the best entity; None: no drawable mask
    mask_quality: float | None  # the decoder's IoU estimate q; None: no drawable mask
    value: float  # mean of score_uncertainty(p) and quality_uncertainty(q)


@dataclass
class Uncertainty:
    value: float  # in [0, 1]; higher: more worth labelling
    score_part: float  # mean over slices of 1 - |2p - 1|
    quality_part: float  # mean over slices of 1 - q
    axis: str
    slices: list[SliceUncertainty]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def score_uncertainty(score: float) -> float:
    """``1 - |2p - 1|``: 1 at p = 0.5, 0 at p = 0 or 1."""
    p = min(max(float(score), 0.0), 1.0)
    return 1.0 - abs(2.0 * p - 1.0)


def quality_uncertainty(mask_quality: float) -> float:
    """``1 - q`` with q clipped to [0, 1] (the quality head is a regression, not a probability)."""
    return 1.0 - min(max(float(mask_quality), 0.0), 1.0)


def middle_slices(count: int, slices: int) -> list[int]:
    """``slices`` indices evenly spaced over the middle half of ``count`` (the middle one for 1)."""
    if count < 1 or slices < 1:
        raise ValueError(f"need at least one slice to choose from and to choose, got {count} and {slices}")
    centre, half_width = (count - 1) / 2, (count - 1) / 4
    offsets = np.linspace(-1.0, 1.0, slices) if slices > 1 else np.zeros(1)
    return sorted({int(np.floor(centre + half_width * o + 0.5)) for o in offsets})


def image_uncertainty(predictor, image: MedicalImage, query: str, axis: str = "axial", slices: int = 3,
                      window: str | tuple[float, float] | None = None) -> Uncertainty:
    """Uncertainty of ``predictor`` (a :class:`medisee.predictor.Predictor`) answering
    ``query`` about ``image``; deterministic. The predictor itself is not changed: a shallow
    copy with score threshold 0 shares its model and encoding cache."""
    axis = resolve_axis(image, axis)
    indices = middle_slices(image.num_slices(axis), slices)
    display = dataclasses.replace(image, array=to_uint8(image, parse_window(window)))
    keep_all = copy.copy(predictor)
    keep_all.score_threshold = 0.0
    predictions = keep_all.predict_slices([extract_slice(display, i, axis) for i in indices], query, mode="fast")
    rated = []
    for index, prediction in zip(indices, predictions):
        best = max(prediction.entities, key=lambda e: e.score, default=None)
        if best is None:
            rated.append((SliceUncertainty(index, None, None, 1.0), 1.0, 1.0))
            continue
        parts = score_uncertainty(best.score), quality_uncertainty(best.mask_quality)
        rated.append((SliceUncertainty(index, float(best.score), float(best.mask_quality), sum(parts) / 2), *parts))
    return Uncertainty(
        value=float(np.mean([r[0].value for r in rated])),
        score_part=float(np.mean([r[1] for r in rated])),
        quality_part=float(np.mean([r[2] for r in rated])),
        axis=axis,
        slices=[r[0] for r in rated],
    )
