"""Records -> ``TrainingSample``: pixels, masks, boxes, the query and the answer to learn."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..imaging import read_image, to_uint8
from ..model import TrainingSample
from . import queries, templates
from .records import DataError, Record

PIXEL_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_pixels(path: Path, window=None) -> np.ndarray:
    """A display-ready uint8 image: PNG/JPEG as stored, anything else read and windowed."""
    if path.suffix.lower() in PIXEL_SUFFIXES:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
        if array.dtype != np.uint8:
            raise DataError(f"{path}: expected an 8-bit image, got {array.dtype}")
        return array
    image = read_image(path)
    pixels = to_uint8(image, tuple(window) if isinstance(window, list) else window)
    return pixels[0] if pixels.ndim == 3 and image.ndim == 3 and pixels.shape[0] == 1 else pixels


def load_mask(path: Path) -> np.ndarray:
    if path.suffix.lower() in PIXEL_SUFFIXES:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    mask = read_image(path).array
    return (mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask) > 0


@lru_cache(maxsize=4096)
def _cached_pixels(path: str, window) -> np.ndarray:
    return load_pixels(Path(path), window)


def to_training_sample(
    record: Record,
    rng: random.Random,
    query_kind: str = "any",
    with_plain_query: bool = False,
    instruction_probability: float = 0.5,
) -> TrainingSample:
    """One supervised conversation from a record.

    ``query_kind`` picks the ``short`` or ``long`` query ("any" draws one). With probability
    ``instruction_probability`` the query gets an explicit instruction suffix ("Please
    respond with segmentation mask and location bounding box, and explain why."), so the
    model learns both the bare question a radiologist types and the instructed form."""
    window = record.extra.get("window")
    image = _cached_pixels(str(record.image), tuple(window) if isinstance(window, list) else window)
    kind = rng.choice(("short", "long")) if query_kind == "any" else query_kind
    query = getattr(record, kind)
    if rng.random() < instruction_probability:
        query = f"{query} {rng.choice(templates.REASONING_SUFFIXES)}"
    height, width = image.shape[:2]
    if record.absent or record.mask is None:
        answer = templates.absent_answer(record.class_text, record.explanation)
        return TrainingSample(image, query, answer, np.zeros((0, height, width), np.uint8), np.zeros((0, 4), np.float32))
    targets = record.extra.get("targets") or [{"mask": record.mask, "bbox": record.bbox}]
    masks, boxes = [], []
    for target in targets:  # several for multi-label instructions (MIMO perspective I)
        mask = load_mask(Path(target["mask"]))
        if mask.shape != (height, width):
            raise DataError(f"{record.source}: mask {mask.shape} and image {(height, width)} differ in size")
        masks.append(mask.astype(np.uint8))
        boxes.append(np.asarray(target["bbox"], dtype=np.float32))
    answer = record.extra.get("answer") or templates.grounded_answer(record.explanation)
    plain = queries.label_query(record.class_text, rng) if with_plain_query and len(targets) == 1 else None
    return TrainingSample(image, query, answer, np.stack(masks), np.stack(boxes), plain_query=plain)
