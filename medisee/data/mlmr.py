"""MLMR-SD jsonl files: one target per line, ``{"image", "mask", "class_text", "long",
"short", "bbox"}`` plus optional ``"explanation"``, ``"absent"`` and any extra keys.

Paths are relative to the jsonl's folder (absolute paths are accepted too). ``bbox`` is
normalised ``[x0, y0, x1, y1]`` with ``0 <= x0 < x1 <= 1`` and ``0 <= y0 < y1 <= 1``; pixel
boxes are rejected rather than guessed at. An absent target (``"absent": true``) has no
mask and no box (null, "" or [] are accepted). Every problem raises :class:`DataError`
naming ``file:line``, so a broken sample is found at load time, not mid-training.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..imaging import ImageReadError, read_image
from ..atomic import write_text
from .records import DataError, Record
from .templates import CANDIDATE_PATTERN

REQUIRED = ("image", "mask", "class_text", "long", "short", "bbox")
OPTIONAL = ("explanation", "absent")
PIXEL_SUFFIXES = (".png", ".jpg", ".jpeg")


def data_path(folder: Path, value: str) -> Path:
    """A path from a data file, relative to that file's folder, as a clean absolute path
    ("a/../b" folded, symlinks kept)."""
    return Path(os.path.normpath(folder / value))


def _as_2d(shape: tuple[int, ...], path: Path, where: str) -> tuple[int, int]:
    """(height, width); a volume holding one slice counts as 2D, as the loader reads it."""
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise DataError(f"{where}: {path} must be a 2D image or a single slice, got shape {shape}")
    return int(shape[0]), int(shape[1])


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(height, width), from the header alone for PNG and JPEG."""
    try:
        if path.suffix.lower() in PIXEL_SUFFIXES:
            with Image.open(path) as image:
                return image.height, image.width
        return _as_2d(read_image(path).shape, path, where)
    except (OSError, ImageReadError) as exc:
        raise DataError(f"{where}: cannot read {path}: {exc}") from exc


def read_mask(path: Path, where: str) -> np.ndarray:
    """The mask as a (height, width) bool array, read exactly as the training loader reads it."""
    try:
        if path.suffix.lower() in PIXEL_SUFFIXES:
            with Image.open(path) as image:
                return np.asarray(image.convert("L")) > 0
        array = read_image(path).array
    except (OSError, ImageReadError) as exc:
        raise DataError(f"{where}: cannot read {path}: {exc}") from exc
    return array.reshape(_as_2d(array.shape, path, where)) > 0


def load_target(image: Path, mask: Path, where: str, check_image: bool = True) -> np.ndarray:
    """The target's mask, after checking the files exist, agree in size and the mask is not empty."""
    if check_image and not image.is_file():
        raise DataError(f"{where}: image file not found: {image}")
    if not mask.is_file():
        raise DataError(f"{where}: mask file not found: {mask}")
    array = read_mask(mask, where)
    if check_image:
        height, width = image_size(image, where)
        if array.shape != (height, width):
            raise DataError(f"{where}: mask is {array.shape[1]}x{array.shape[0]} but the image is {width}x{height}")
    if not array.any():
        raise DataError(f"{where}: mask is empty (all zero) for a present target")
    return array


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Normalised ``(x0, y0, x1, y1)`` enclosing the mask's pixels (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return (float(xs.min() / width), float(ys.min() / height), float((xs.max() + 1) / width),
            float((ys.max() + 1) / height))


def parse_bbox(value: object, where: str) -> tuple[float, float, float, float]:
    numbers = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not numbers or len(value) != 4:
        raise DataError(f"{where}: bbox must be 4 numbers, got {value!r}")
    x0, y0, x1, y1 = (float(v) for v in value)
    if min(x0, y0, x1, y1) < 0 or max(x0, y0, x1, y1) > 1:
        raise DataError(f"{where}: bbox must be normalised to [0, 1], got {value!r}")
    if x0 >= x1 or y0 >= y1:
        raise DataError(f"{where}: bbox needs x0 < x1 and y0 < y1, got {value!r}")
    return x0, y0, x1, y1


def _text(line: dict, key: str, where: str) -> str:
    value = line[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {key!r} must be a non-empty string")
    return value


def _parse_line(line: dict, folder: Path, where: str, validate: bool) -> Record:
    absent = line.get("absent", False)
    if not isinstance(absent, bool):
        raise DataError(f"{where}: 'absent' must be true or false, got {absent!r}")
    missing = [key for key in REQUIRED if key not in line and not (absent and key in ("mask", "bbox"))]
    if missing:
        raise DataError(f"{where}: missing required key {missing[0]!r}")
    image = data_path(folder, _text(line, "image", where))
    class_text, long, short = (_text(line, key, where) for key in ("class_text", "long", "short"))
    explanation = line.get("explanation", "")
    if not isinstance(explanation, str):
        raise DataError(f"{where}: 'explanation' must be a string")
    if CANDIDATE_PATTERN.search(explanation):
        raise DataError(f"{where}: explanation must not contain candidate tokens such as [SEG]")
    extra = {key: value for key, value in line.items() if key not in REQUIRED and key not in OPTIONAL}
    record = Record(image, None, class_text, long, short, None, explanation, absent, where, extra)
    if absent:
        if line.get("mask") not in (None, ""):
            raise DataError(f"{where}: absent target must not have a mask")
        if line.get("bbox") not in (None, []):
            raise DataError(f"{where}: absent target must not have a bbox")
        if validate and not image.is_file():
            raise DataError(f"{where}: image file not found: {image}")
        return record
    record.mask = data_path(folder, _text(line, "mask", where))
    record.bbox = parse_bbox(line["bbox"], where)
    if validate:
        load_target(image, record.mask, where)
    return record


def read_mlmr_jsonl(path: str | Path, validate: bool = True) -> list[Record]:
    """All records of the file, in order; blank lines are skipped. ``validate=False`` skips
    the checks that open image and mask files (existence, size, empty mask)."""
    path = Path(path)
    folder = path.absolute().parent
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    records = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(line, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(line).__name__}")
        records.append(_parse_line(line, folder, where, validate))
    return records


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(Path(path).absolute(), folder)).as_posix()


def _to_line(record: Record, folder: Path) -> dict:
    clash = sorted(set(record.extra) & {*REQUIRED, *OPTIONAL})
    if clash:
        raise ValueError(f"{record.source or record.image}: extra keys {clash} clash with the format's own keys")
    line = {
        "image": _relative(record.image, folder),
        "mask": None if record.mask is None else _relative(record.mask, folder),
        "class_text": record.class_text,
        "long": record.long,
        "short": record.short,
        "bbox": None if record.bbox is None else [float(v) for v in record.bbox],
    }
    if record.explanation:
        line["explanation"] = record.explanation
    if record.absent:
        line["absent"] = True
    line.update(record.extra)
    return line


def write_mlmr_jsonl(records: Iterable[Record], path: str | Path) -> None:
    """Write atomically (a temporary file renamed over ``path``), paths relative to its folder."""
    path = Path(path)
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(_to_line(record, folder), ensure_ascii=False) + "\n" for record in records)
    write_text(path, text)
