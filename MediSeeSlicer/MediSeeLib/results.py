"""An ``/infer/medisee`` answer -> what goes into the scene: one :class:`SegmentSpec` per entity and
:class:`RoiSpec` boxes in RAS (one per slice, or one 3D ROI around an entity's slices; for a volume
answer one 3D ROI per structure around its voxels)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .answer import Answer
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
    response: Answer | None = None  # the server's whole answer

    def attributes(self) -> dict[str, str]:
        """What is kept on the segmentation node (MRML attributes are strings): answer, scores, request, and the
        server's whole answer as JSON (``MediSee.AnswerJSON``), so a saved scene keeps everything it said."""
        scores = {s.name: round(s.score, 4) for s in self.segments}
        response = self.response
        return {"MediSee.Query": self.query, "MediSee.Answer": self.answer, "MediSee.Axis": self.axis,
                "MediSee.Slices": json.dumps(self.slices), "MediSee.Scores": json.dumps(scores),
                "MediSee.Model": response.model if response else "",
                "MediSee.Timing": json.dumps(response.timing if response else {}),
                "MediSee.AnswerJSON": json.dumps(response.to_dict() if response else {})}


def answer_text(result: InferenceResult) -> str:
    """What the panel shows: the answer, then each structure's measurements (a volume answer) or
    each segment's score and slices."""
    lines = [result.answer or "(fast mode: masks only)", ""]
    structures = result.response.structures if result.response else None
    if structures:
        lines += [f"{s.phrase}: {s.volume_ml:.1f} mL, slices {s.first_slice}-{s.last_slice} ({result.axis}), "
                  f"score {s.score:.2f}" for s in structures]
    else:
        lines += [f"{s.name}: score {s.score:.2f}, slices {s.slices}" for s in result.segments] or ["No target found."]
    return "\n".join(lines)


def build_result(answer: InferAnswer) -> InferenceResult:
    """Label file + JSON -> segments, checked against each other (shape, label values)."""
    result = answer.result
    try:
        geometry = Geometry.from_answer(result)
    except ValueError as err:
        raise ServerFailed(f"an answer with a broken geometry ({err})") from None
    if answer.label is None:
        labels = np.zeros(geometry.shape, np.uint8)
    else:
        labels, _ = read_label_bytes(answer.label, _suffix(answer.label_name))
    if labels.shape != geometry.shape:
        raise ServerFailed(f"a label volume of shape {labels.shape} for an image of shape {geometry.shape}")
    entities = {e.label: e for e in result.entities}
    colours = segment_colours({value: phrase for phrase, value in result.label_names.items()})
    segments = []
    for phrase, value in sorted(result.label_names.items(), key=lambda item: item[1]):
        entity = entities.get(value)
        segments.append(SegmentSpec(
            label=value, name=phrase, color=colours[value], mask=labels == value,
            score=entity.score if entity else 0.0, slices=sorted(int(k) for k in entity.slices) if entity else [],
            code=code_for(phrase)))
    return InferenceResult(query=result.query, answer=result.answer, axis=result.axis, slices=list(result.slices),
                           geometry=geometry, labels=labels, segments=segments, response=result)


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


def roi_specs(result: InferenceResult, per_slice: bool = False) -> list[RoiSpec]:
    """The entities' boxes in RAS: one ROI per entity and slice, or one 3D ROI per entity (for a
    volume answer, around its structure's voxels; else around its slices' boxes)."""
    geometry, rois = result.geometry, []
    if not per_slice and result.response is not None and result.response.structures:
        return [_roi(geometry, s.phrase, s.label, _voxel_bounds(s.bounds_ijk), None) for s in result.response.structures]
    normal, row, column = geometry.plane_axes(result.axis)
    for entity in result.response.entities if result.response else []:
        boxes = {int(k): found.box for k, found in entity.slices.items()}
        if not boxes:
            continue
        bounds = {k: _numpy_bounds(k, box, normal, row, column) for k, box in sorted(boxes.items())}
        if per_slice:
            rois += [_roi(geometry, f"{entity.phrase} (slice {k})", entity.label, b, k) for k, b in bounds.items()]
        else:
            stacked = np.stack(list(bounds.values()))
            union = np.stack([stacked[:, :, 0].min(axis=0), stacked[:, :, 1].max(axis=0)], axis=1)
            rois.append(_roi(geometry, entity.phrase, entity.label, union, None))
    return rois


def _voxel_bounds(bounds_ijk: list[int]) -> np.ndarray:
    """(3, 2) continuous numpy-order bounds around voxels ``[i0, j0, k0, i1, j1, k1]`` (inclusive)."""
    low, high = np.asarray(bounds_ijk[:3], float), np.asarray(bounds_ijk[3:], float)
    return np.stack([low - 0.5, high + 0.5], axis=1)[::-1]


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
