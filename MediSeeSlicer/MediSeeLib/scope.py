"""Which slices a question is about, and the user's box/point prompts, in the server's terms.

Slicer gives positions in RAS (a view's plane centre, ROI corners, a fiducial); the server wants
slice indices along an anatomical axis and in-plane pixel coordinates (x = column, y = row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EmptyQuery, NoVolumeSelected, OutsideVolume
from .geometry import Geometry

# Slicer's slice view orientations -> the server's axis names
VIEW_AXES = {"Axial": "axial", "Coronal": "coronal", "Sagittal": "sagittal"}


@dataclass(frozen=True)
class Scope:
    """``kind``: "slice" (``first``), "range" (``first``-``last``) or "all"."""

    kind: str
    axis: str = "axial"
    first: int = 0
    last: int = 0

    def slice_param(self) -> int | str:
        if self.kind == "slice":
            return self.first
        if self.kind == "range":
            low, high = sorted((self.first, self.last))
            return f"{low}-{high}"
        if self.kind == "all":
            return "all"
        raise ValueError(f"unknown scope {self.kind!r}")


def view_axis(orientation: str) -> str:
    """A slice view's orientation ("Axial", "Coronal", "Sagittal"; reformatted views count as axial)."""
    return VIEW_AXES.get(orientation, "axial")


def slice_index_at(geometry: Geometry, axis: str, ras: np.ndarray) -> int:
    """The slice along ``axis`` through RAS point ``ras`` (a view's plane centre); outside -> :class:`OutsideVolume`."""
    normal = geometry.slice_axis(axis)
    index = int(np.floor(geometry.to_ijk(ras)[2 - normal] + 0.5))
    if not 0 <= index < geometry.shape[normal]:
        raise OutsideVolume(f"{axis} slice shown in the view")
    return index


def box_prompt(geometry: Geometry, axis: str, corners_ras: np.ndarray) -> list[float]:
    """An ROI's corners (RAS) -> ``[x0, y0, x1, y1]`` on slices along ``axis``, clipped to the plane."""
    _, row, column = geometry.plane_axes(axis)
    numpy_index = geometry.to_ijk(np.asarray(corners_ras, float))[:, ::-1] + 0.5  # voxel edges
    x0, x1 = np.clip([numpy_index[:, column].min(), numpy_index[:, column].max()], 0, geometry.shape[column])
    y0, y1 = np.clip([numpy_index[:, row].min(), numpy_index[:, row].max()], 0, geometry.shape[row])
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise OutsideVolume("box (ROI)")
    return [round(float(v), 2) for v in (x0, y0, x1, y1)]


def point_prompt(geometry: Geometry, axis: str, ras: np.ndarray) -> tuple[list[float], int]:
    """A fiducial (RAS) -> ``[x, y]`` in the plane and the slice it lies on."""
    normal, row, column = geometry.plane_axes(axis)
    numpy_index = geometry.to_ijk(np.asarray(ras, float))[::-1]
    x, y, k = numpy_index[column] + 0.5, numpy_index[row] + 0.5, int(np.floor(numpy_index[normal] + 0.5))
    if not (0 <= x <= geometry.shape[column] and 0 <= y <= geometry.shape[row] and 0 <= k < geometry.shape[normal]):
        raise OutsideVolume("point")
    return [round(float(x), 2), round(float(y), 2)], k


def request_params(query: str, scope: Scope, *, volume_selected: bool = True, box: list[float] | None = None,
                   point: list[float] | None = None, prompt_slice: int | None = None, mode: str | None = None,
                   window: str | None = None) -> dict[str, Any]:
    """The ``params`` of a question, after the checks a user can fail before anything is sent."""
    if not volume_selected:
        raise NoVolumeSelected()
    if not query or not query.strip():
        raise EmptyQuery()
    params: dict[str, Any] = {"query": query.strip(), "slice": scope.slice_param(), "axis": scope.axis}
    if box is not None:
        params["box"] = box
    if point is not None:
        params["point"] = point
    if prompt_slice is not None and (box is not None or point is not None):
        params["prompt_slice"] = prompt_slice
    if mode:
        params["mode"] = mode
    if window:
        params["window"] = window
    return params


def panel_request(geometry: Geometry, query: str, scope: Scope, roi_corners: np.ndarray | None = None,
                  point_ras: np.ndarray | None = None, window: str | None = None) -> dict[str, Any]:
    """A question's params from the panel: its scope, a box (an ROI's RAS corners) and/or a point
    (RAS) drawn on one slice, which becomes the prompts' slice, and a CT window preset (None: the server's)."""
    box = point = prompt_slice = None
    if roi_corners is not None:
        box, prompt_slice = box_prompt(geometry, scope.axis, roi_corners), slice_index_at(geometry, scope.axis, roi_corners.mean(axis=0))
    if point_ras is not None:
        point, prompt_slice = point_prompt(geometry, scope.axis, point_ras)
    return request_params(query, scope, box=box, point=point, prompt_slice=prompt_slice, window=window)


def parse_history(stored: Any) -> list[str]:
    """The query history as kept in the settings (JSON text); anything unreadable is no history."""
    try:
        history = json.loads(stored)
    except (TypeError, ValueError):
        return []
    return [str(q) for q in history] if isinstance(history, list) else []


def remember(history: list[str], query: str, limit: int = 20) -> list[str]:
    """Recent queries, newest first, without duplicates."""
    query = query.strip()
    return ([query] if query else []) + [q for q in history if q != query][: limit - (1 if query else 0)]
