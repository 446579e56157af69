"""An ``/infer/medisee`` answer -> what goes into the scene: one :class:`SegmentSpec` per entity and
:class:`RoiSpec` boxes in RAS (one per slice, or one 3D ROI around an entity's slices)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .errors import ServerFailed
from .geometry import LPS_TO_RAS, Geometry
from .labels import read_label_bytes
from .multipart import InferAnswer
from .terminology import Code, code_for, colour_for, terminology_entry

# distinct, colour-blind-friendly-ish colours (0-1 RGB), by label value, for phrases outside the catalogue
PALETTE = [(0.90, 0.30, 0.24), (0.20, 0.60, 0.86), (0.18, 0.80, 0.44), (0.95, 0.77, 0.06), (0.61, 0.35, 0.71),
           (0.90, 0.49, 0.13), (0.10, 0.74, 0.61), (0.91, 0.12, 0.55), (0.52, 0.76, 0.91), (0.55, 0.45, 0.33)]


@dataclass
class SegmentSpec:
    label: int
    name: str  # the entity's phrase
    color: tuple[float, float, float]
    mask: np.ndarray  # bool, the volume's numpy (k, j, i) shape
    score: float
    slices: list[int]  # indices along the answer's axis where the entity was found
    code: Code | None = None

    @property
    def terminology(self) -> str | None:
        return terminology_entry(self.code) if self.code else None


@dataclass
class RoiSpec:
    """A box in RAS: ``center`` (mm), ``size`` (mm along ``axes``' columns, the image's i, j, k directions)."""

    name: str
    label: int
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    axes: np.ndarray  # 3x3, columns = unit RAS directions of the ROI's edges
    slice: int | None  # None for a 3D ROI over several slices

    def corners(self) -> np.ndarray:
        """The 8 corners in RAS (for checks and for drawing without orientation support)."""
        signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        return np.asarray(self.center) + (signs * np.asarray(self.size)) @ self.axes.T


@dataclass
class InferenceResult:
    query: str
    answer: str
    axis: str
    slices: list[int]
    geometry: Geometry
    labels: np.ndarray  # numpy (k, j, i) label values
    segments: list[SegmentSpec] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    def attributes(self) -> dict[str, str]:
        """What is kept on the segmentation node (MRML attributes are strings): answer, scores, request."""
        scores = {s.name: round(s.score, 4) for s in self.segments}
        return {"MediSee.Query": self.query, "MediSee.Answer": self.answer, "MediSee.Axis": self.axis,
                "MediSee.Slices": json.dumps(self.slices), "MediSee.Scores": json.dumps(scores),
                "MediSee.Model": str(self.raw.get("model", "")), "MediSee.Timing": json.dumps(self.raw.get("timing", {}))}


def build_result(answer: InferAnswer) -> InferenceResult:
    """Label file + JSON -> segments, checked against each other (shape, label values)."""
    result = answer.result
    try:
        geometry = Geometry.from_result(result)
        names = {int(k): str(v) for k, v in (result.get("label_names") or {}).items()}
    except (KeyError, TypeError, ValueError) as err:
        raise ServerFailed(f"an answer without its geometry or label names ({err})") from None
    if answer.label is None:
        labels = np.zeros(geometry.shape, np.uint8)
    else:
        labels, _ = read_label_bytes(answer.label, _suffix(answer.label_name))
    if labels.shape != geometry.shape:
        raise ServerFailed(f"a label volume of shape {labels.shape} for an image of shape {geometry.shape}")
    entities = {int(e["label"]): e for e in result.get("entities", [])}
    colours = segment_colours(names)
    segments = []
    for value, phrase in sorted(names.items()):
        entity = entities.get(value, {})
        segments.append(SegmentSpec(
            label=value, name=phrase, color=colours[value], mask=labels == value,
            score=float(entity.get("score", 0.0)), slices=sorted(int(k) for k in entity.get("slices", {})), code=code_for(phrase)))
    return InferenceResult(query=str(result.get("query", "")), answer=str(result.get("answer", "")),
                           axis=str(result.get("axis", "axial")), slices=[int(s) for s in result.get("slices", [])],
                           geometry=geometry, labels=labels, segments=segments, raw=result)


def segment_colours(names: dict[int, str]) -> dict[int, tuple[float, float, float]]:
    """Label value -> colour: a catalogue structure's own colour (the same in every answer), else the
    palette's by label value; a colour already given in this answer goes to the palette too."""
    colours: dict[int, tuple[float, float, float]] = {}
    for value, phrase in sorted(names.items()):
        colour = colour_for(phrase)
        if colour is None or colour in colours.values():
            colour = PALETTE[(value - 1) % len(PALETTE)]
        colours[value] = colour
    return colours


def roi_specs(result: InferenceResult, per_slice: bool = True) -> list[RoiSpec]:
    """The entities' boxes in RAS: one ROI per entity and slice, or one 3D ROI per entity around its slices."""
    geometry, rois = result.geometry, []
    normal, row, column = geometry.plane_axes(result.axis)
    for entity in result.raw.get("entities", []):
        boxes = {int(k): v["box"] for k, v in entity.get("slices", {}).items()}
        if not boxes:
            continue
        bounds = {k: _numpy_bounds(k, box, normal, row, column) for k, box in sorted(boxes.items())}
        if per_slice:
            rois += [_roi(geometry, f"{entity['phrase']} (slice {k})", int(entity["label"]), b, k) for k, b in bounds.items()]
        else:
            stacked = np.stack(list(bounds.values()))
            union = np.stack([stacked[:, :, 0].min(axis=0), stacked[:, :, 1].max(axis=0)], axis=1)
            rois.append(_roi(geometry, str(entity["phrase"]), int(entity["label"]), union, None))
    return rois


def _numpy_bounds(index: int, box: list[float], normal: int, row: int, column: int) -> np.ndarray:
    """(3, 2) continuous index bounds in numpy axis order; voxel n spans [n - 0.5, n + 0.5]."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bounds = np.zeros((3, 2))
    bounds[normal] = (index - 0.5, index + 0.5)
    bounds[row] = (y0 - 0.5, y1 - 0.5)
    bounds[column] = (x0 - 0.5, x1 - 0.5)
    return bounds


def _roi(geometry: Geometry, name: str, label: int, numpy_bounds: np.ndarray, index: int | None) -> RoiSpec:
    ijk_bounds = numpy_bounds[::-1]
    center = geometry.to_ras(ijk_bounds.mean(axis=1))
    size = (ijk_bounds[:, 1] - ijk_bounds[:, 0]) * np.asarray(geometry.spacing)
    axes = LPS_TO_RAS @ geometry.direction_matrix
    return RoiSpec(name, label, tuple(center.tolist()), tuple(size.tolist()), axes, index)


def _suffix(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else (name[name.rfind("."):] if "." in name else ".nii.gz")
