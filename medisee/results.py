"""Turning per-slice predictions into what clients store: one label array aligned with the
image (one label value per distinct entity phrase) and a JSON-ready entity list."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .imaging import MedicalImage, assemble_volume
from .predictor import Prediction


@dataclass
class LabelledResult:
    labels: np.ndarray  # the image's spatial shape; 0 = background
    label_names: dict[int, str]  # label value -> entity phrase
    entities: list[dict] = field(default_factory=list)  # phrase, label, slice, box, score, mask_quality


def assemble(predictions: list[Prediction], image: MedicalImage, axis: str = "axial") -> LabelledResult:
    """Paint every entity into one label array; where masks overlap the higher score wins."""
    label_of: dict[str, int] = {}
    slices: dict[int, np.ndarray] = {}
    entities = []
    for prediction in predictions:
        index = prediction.slice_index or 0
        for entity in prediction.entities:  # labels in order of first appearance
            label_of.setdefault(entity.phrase, len(label_of) + 1)
        for entity in sorted(prediction.entities, key=lambda e: e.score):
            label = label_of[entity.phrase]
            plane = slices.setdefault(index, np.zeros(entity.mask.shape, dtype=np.uint16))
            plane[entity.mask] = label
        for entity in prediction.entities:
            entities.append({
                "phrase": entity.phrase,
                "label": label_of[entity.phrase],
                "slice": index,
                "box": [round(v, 2) for v in entity.box],
                "score": round(entity.score, 4),
                "mask_quality": round(entity.mask_quality, 4),
                "pixels": int(entity.mask.sum()),
            })
    dtype = np.uint8 if len(label_of) < 256 else np.uint16
    labels = assemble_volume(slices, image, axis=axis, dtype=dtype) if slices else np.zeros(image.shape, dtype)
    return LabelledResult(labels=labels, label_names={v: k for k, v in label_of.items()}, entities=entities)
