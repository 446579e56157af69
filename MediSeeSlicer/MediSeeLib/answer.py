"""The answer to one question about a study, as the server (``/infer/medisee``) and the CLI
(``medisee predict``'s ``result.json``) return it: the one typed, versioned definition of that JSON.

MONAI Label's convention where it has one: ``label_names`` maps each entity's phrase to its label
value, as MONAI Label's writer returns it and its Slicer plugin reads it to name segments (sorted by
value). Our richer fields sit beside it. ``medisee.answer.build`` is the only producer.

This file exists twice, byte for byte: ``medisee/answer/schema.py`` and
``MediSeeSlicer/MediSeeLib/answer.py`` (Slicer's Python has neither ``medisee`` nor pydantic);
``tests/test_answer.py`` fails when they differ. Standard library only; annotations use
``typing.Optional`` because Slicer 5.2-5.6 run Python 3.9, which cannot evaluate ``X | None``.

Versioning: ``schema_version`` is a major version. Readers ignore fields they do not know, so a
new optional field (default ``None``) keeps the version; removing or renaming a field, or
changing what it means, raises it, and readers refuse answers newer than they understand.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

SCHEMA_VERSION = 1


class AnswerFormatError(ValueError):
    """JSON that is not an answer of a version this code reads; the message names the field."""


@dataclass
class SliceFinding:
    """An entity on one slice: its box ``[x0, y0, x1, y1]`` in pixels of the slice plane
    (x = column, y = row, pixel edges), its score, its mask's stability and its pixel count."""

    box: List[float]
    score: float
    mask_quality: float
    pixels: int


@dataclass
class Entity:
    """One structure the answer names, with one label value in the label volume."""

    label: int
    phrase: str
    score: float  # the best over its slices
    slices: Dict[str, SliceFinding]  # slice index (a JSON key, so text) -> what was found there


@dataclass
class Structure:
    """One structure across a volume (a question about several slices of a volume): its one
    connected mask is the label volume's ``label``. ``bounds_ijk`` are voxel indices
    ``[i0, j0, k0, i1, j1, k1]`` (inclusive, ITK order); ``bounds_ras`` the axis-aligned box of
    those voxels' outer corners in RAS mm ``[R0, A0, S0, R1, A1, S1]``."""

    label: int
    phrase: str
    score: float
    first_slice: int  # along the answer's axis
    last_slice: int
    slice_count: int
    voxels: int
    volume_ml: float
    bounds_ijk: List[int]
    bounds_ras: List[float]


@dataclass
class SliceAnswer:
    slice: Optional[int]  # None for a 2D image
    answer: str


@dataclass
class OutputFiles:
    """What ``medisee predict`` wrote beside ``result.json`` (names inside its output folder)."""

    labels: str
    overlay: str
    overlay_slice: Optional[int]
    masks: Dict[str, str]  # label value -> that entity's binary mask file


@dataclass
class Answer:
    schema_version: int
    query: str
    mode: str  # full (text and masks) or fast (masks only)
    model: str
    answer: str  # a volume: the key slice's answer naming the most found structures; else the first grounded slice's
    answers: List[SliceAnswer]
    axis: str
    slices: List[int]  # the slices asked about, along ``axis``
    label_names: Dict[str, int]  # MONAI Label's convention: phrase -> label value
    entities: List[Entity]
    image_shape: List[int]  # numpy order (k, j, i)
    spacing: List[float]  # ITK order (i, j, k), mm
    origin: List[float]  # LPS, mm
    direction: List[float]  # row-major; columns are the index axes in LPS
    timing: Dict[str, float]  # seconds (and slices_per_s)
    model_trained: Optional[bool] = None  # the CLI says whether the model was trained
    image: Optional[str] = None  # the CLI's input as given (the server never shows paths)
    files: Optional[OutputFiles] = None  # the CLI's output files
    structures: Optional[List[Structure]] = None  # several slices of a volume: one per structure, measured

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready; optional fields that are not set are left out."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> Answer:
        """Read and check an answer; :class:`AnswerFormatError` names the first field that is wrong."""
        if not isinstance(data, dict):
            raise AnswerFormatError("an answer must be a JSON object")
        version = data.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise AnswerFormatError(f"answer version {version} is newer than this reader's {SCHEMA_VERSION}: update it")
        return _read(data, cls, "answer")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None or f.default is dataclasses.MISSING}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read(value: Any, kind: Any, where: str) -> Any:
    """``value`` (parsed JSON) as ``kind`` (an annotation of the classes above), checked."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        return None if value is None else _read(value, arguments[0], where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise AnswerFormatError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        fields = {}
        for field in dataclasses.fields(kind):
            if field.name in value:
                fields[field.name] = _read(value[field.name], hints[field.name], f"{where}.{field.name}")
            elif field.default is dataclasses.MISSING:
                raise AnswerFormatError(f"{where}: the field {field.name!r} is missing")
        return kind(**fields)
    if origin is list:
        if not isinstance(value, list):
            raise AnswerFormatError(f"{where}: expected a list, got {type(value).__name__}")
        return [_read(item, arguments[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise AnswerFormatError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): _read(v, arguments[1], f"{where}[{k!r}]") for k, v in value.items()}
    return _scalar(value, kind, where)


def _scalar(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, bool) != (kind is bool):
        raise AnswerFormatError(f"{where}: expected {kind.__name__}, got {value!r}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        raise AnswerFormatError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value
