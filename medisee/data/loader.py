"""Records -> pixels, masks and ``TrainingSample``s; shared by training and evaluation so
both see an image exactly the same way.

8-bit PNG/JPEG are used as stored; anything else (NIfTI, DICOM, 16-bit PNG, ...) is read
with ``medisee.imaging.read_image`` and mapped to uint8 with ``record.extra["window"]`` (a
CT preset name or ``[level, width]``) when given. Volumes need ``record.extra["slice"]``
(an axial index) unless they hold a single slice.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..imaging import read_image, to_uint8
from ..model import TrainingSample
from . import noise, queries, templates
from .knowledge import find_structure
from .records import DataError, Record

PIXEL_SUFFIXES = (".png", ".jpg", ".jpeg")


def _window(record: Record):
    window = record.extra.get("window")
    return tuple(window) if isinstance(window, list) else window


def _plane(array: np.ndarray, spatial_dims: int, record: Record, what: str) -> np.ndarray:
    """The 2D plane of a volume: its only slice, or ``record.extra["slice"]`` (axial index)."""
    if spatial_dims == 2:
        return array
    index = record.extra.get("slice")
    if index is None:
        if array.shape[0] != 1:
            raise DataError(f"{record.source}: {what} is a volume of {array.shape[0]} slices; "
                            "give the slice index in the record's \"slice\" field")
        index = 0
    if not 0 <= int(index) < array.shape[0]:
        raise DataError(f"{record.source}: slice {index} out of range for the {what} ({array.shape[0]} slices)")
    return array[int(index)]


def load_image(record: Record) -> np.ndarray:
    """The record's image as the model sees it: uint8 (H, W) or (H, W, 3)."""
    path = Path(record.image)
    try:
        if path.suffix.lower() in PIXEL_SUFFIXES:
            with Image.open(path) as opened:
                if opened.mode in ("L", "RGB"):
                    return np.array(opened)
        image = read_image(path)
        pixels = to_uint8(image, _window(record))
    except (OSError, ValueError) as err:
        raise DataError(f"{record.source or path}: cannot read the image: {err}") from err
    return _plane(pixels, image.ndim, record, "image")


def load_mask(record: Record, path: str | Path | None = None) -> np.ndarray:
    """A ground-truth mask of the record (its own, or ``path`` for extra targets) as bool (H, W)."""
    path = Path(path or record.mask)
    try:
        if path.suffix.lower() in PIXEL_SUFFIXES:
            with Image.open(path) as opened:
                return np.asarray(opened.convert("L")) > 0
        image = read_image(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{record.source or path}: cannot read the mask: {err}") from err
    array = image.array[..., 0] if image.is_rgb else image.array
    return _plane(array, image.ndim, record, "mask") > 0


@lru_cache(maxsize=4096)
def _cached_image(image: str, window, index, source: str) -> np.ndarray:
    """Training draws the same slice many times: decode each once."""
    extra = {"window": list(window) if isinstance(window, tuple) else window, "slice": index}
    return load_image(Record(Path(image), None, "", "", "", None, source=source, extra=extra))


@lru_cache(maxsize=16384)
def _cached_mask(path: str, index, source: str) -> np.ndarray:
    return load_mask(Record(Path(path), Path(path), "", "", "", None, source=source, extra={"slice": index}))


def slice_key(record: Record) -> tuple[str, object]:
    """What identifies a record's slice: its image (and the slice index of a volume)."""
    return str(record.image), record.extra.get("slice")


def slice_structures(records: list[Record]) -> dict[tuple[str, object], dict[str, str]]:
    """For each slice, every structure a single-target record marks on it (name -> mask
    path): what the patch head learns from. Structures without a record count as absent."""
    out: dict[tuple[str, object], dict[str, str]] = {}
    for record in records:
        if not record.absent and record.mask is not None and not record.extra.get("targets"):
            out.setdefault(slice_key(record), {})[record.class_text] = str(record.mask)
    return out


def to_training_sample(
    record: Record,
    rng: random.Random,
    query_kind: str = "any",
    with_plain_query: bool = False,
    instruction_probability: float = 0.5,
    structures: dict[str, str] | None = None,
) -> TrainingSample:
    """One supervised conversation from a record.

    ``query_kind`` picks the ``short`` or ``long`` query ("any" draws one). With probability
    ``instruction_probability`` the query gets an explicit instruction suffix ("Please
    respond with segmentation mask and location bounding box, and explain why."), so the
    model learns both the bare question a radiologist types and the instructed form.
    Multi-target instructions carry ``extra["targets"]`` and their answer in ``extra["answer"]``;
    visual-prompt instructions carry ``extra["prompt_box"]`` or ``extra["prompt_point"]``.
    ``structures`` (name -> mask path, from ``slice_structures``) gives the sample every
    structure on its slice, for the patch head."""
    image = _cached_image(str(record.image), _window(record), record.extra.get("slice"), record.source)
    on_slice = None
    if structures is not None:
        on_slice = {name: _cached_mask(path, record.extra.get("slice"), record.source) for name, path in structures.items()}
    query = training_query(record, rng, query_kind, instruction_probability)
    asked = asked_structures(record)
    height, width = image.shape[:2]
    if record.absent or record.mask is None:
        answer = record.extra.get("answer") or templates.absent_answer(record.class_text, record.explanation)
        return TrainingSample(image, query, answer, np.zeros((0, height, width), np.uint8), np.zeros((0, 4), np.float32),
                              structures=on_slice, asked=asked)
    targets = record.extra.get("targets") or [{"mask": record.mask, "bbox": record.bbox}]
    masks, boxes = [], []
    for target in targets:
        mask = load_mask(record, target["mask"])
        if mask.shape != (height, width):
            raise DataError(f"{record.source}: mask {mask.shape} and image {(height, width)} differ in size")
        masks.append(mask.astype(np.uint8))
        boxes.append(np.asarray(target["bbox"], dtype=np.float32))
    answer = record.extra.get("answer") or templates.grounded_answer(record.explanation)
    referring_box, referring_point = record.extra.get("prompt_box"), record.extra.get("prompt_point")
    plain = None
    if with_plain_query and len(targets) == 1 and referring_box is None and referring_point is None:
        plain = queries.label_query(record.class_text, rng)
    return TrainingSample(image, query, answer, np.stack(masks), np.stack(boxes), plain_query=plain,
                          referring_box=tuple(referring_box) if referring_box else None,
                          referring_point=tuple(referring_point) if referring_point else None,
                          structures=on_slice, asked=asked)


def training_query(record: Record, rng: random.Random, query_kind: str = "any",
                   instruction_probability: float = 0.5) -> str:
    """The query a draw of ``record`` asks: its short or long one (``query_kind``; "any"
    draws), reasoning queries sometimes with an explicit instruction suffix, and with the
    record's ``extra["noise"]`` probability typed-text noise (``noise.perturb``)."""
    kind = rng.choice(("short", "long")) if query_kind == "any" else query_kind
    query = getattr(record, kind)
    if not record.extra.get("request") and rng.random() < instruction_probability:
        query = f"{query} {rng.choice(templates.REASONING_SUFFIXES)}"
    if rng.random() < float(record.extra.get("noise", 0.0)):
        query = noise.perturb(query, rng)
    return query


def asked_structures(record: Record) -> tuple[str, ...] | None:
    """The catalogue structures a record's query asks for (the query head's target): what
    the record says (``extra["asked"]``), none for a question about a drawn box or click,
    else its targets; None when a target is outside the catalogue (nothing to learn)."""
    if "asked" in record.extra:
        return tuple(record.extra["asked"])
    if record.extra.get("prompt_box") or record.extra.get("prompt_point"):
        return ()
    targets = record.extra.get("targets")
    names = [t.get("class_text") or "" for t in targets] if targets else [record.class_text]
    found = [find_structure(name) for name in names]
    return None if any(f is None for f in found) else tuple(f.name for f in found)


def group_by_image(records: list[Record]) -> list[list[Record]]:
    """Present-target records grouped by the image (and slice) they share."""
    groups: dict[tuple, list[Record]] = {}
    for record in records:
        if not record.absent and record.mask is not None:
            groups.setdefault(slice_key(record), []).append(record)
    return list(groups.values())


def image_targets(group: list[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image of a group with every target's mask (k, H, W) and box (k, 4)."""
    first = group[0]
    image = _cached_image(str(first.image), _window(first), first.extra.get("slice"), first.source)
    masks = np.stack([load_mask(record) for record in group]).astype(np.uint8)
    boxes = np.asarray([record.bbox for record in group], dtype=np.float32)
    return image, masks, boxes
