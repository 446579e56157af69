"""Image geometry as the server reports it (LPS, numpy ``(z, y, x)`` arrays) and as Slicer wants it (RAS, IJK).

The server's JSON gives ``image_shape`` in numpy order and ``spacing``/``origin``/``direction`` in
ITK's LPS convention with index order (i, j, k) = (x, y, z). Slicer's RAS is LPS with the first two
coordinates negated. A slice along an anatomical axis is the numpy axis whose physical direction is
most aligned with it; its rows run along the lower remaining numpy axis and its columns along the
higher, and boxes are ``[x0, y0, x1, y1]`` in continuous pixel coordinates (x = column, pixel edges:
voxel centre ``n`` spans ``[n, n + 1)``), which is how the server slices and paints.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from .answer import Answer

AXES = ("axial", "coronal", "sagittal")
_PHYSICAL_ROW = {"axial": 2, "coronal": 1, "sagittal": 0}  # row of the LPS direction matrix per axis
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """A 3D image's voxel grid: ``shape`` in numpy (k, j, i) order, the rest ITK (i, j, k) order in LPS."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major, columns = index axes

    @classmethod
    def from_answer(cls, answer: Answer) -> Geometry:
        """The geometry in an ``/infer/medisee`` answer (2D images become a one-slice stack)."""
        shape, spacing, origin, direction = answer.image_shape, answer.spacing, answer.origin, answer.direction
        if len(shape) == 2:
            shape, spacing, origin = [1, *shape], [*spacing, 1.0], [*origin, 0.0]
            direction = [direction[0], direction[1], 0.0, direction[2], direction[3], 0.0, 0.0, 0.0, 1.0]
        if len(shape) != 3 or len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise ValueError(f"a geometry of shape {shape} with {len(spacing)} spacings and {len(direction)} direction values")
        return cls(tuple(shape), tuple(spacing), tuple(origin), tuple(direction))

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray, shape: tuple[int, int, int]) -> Geometry:
        """A Slicer volume's IJKToRAS matrix and numpy-order array shape (what ``arrayFromVolume`` gives)."""
        matrix = np.asarray(matrix, float).reshape(4, 4)
        lps = LPS_TO_RAS @ matrix[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        direction = lps / spacing
        origin = LPS_TO_RAS @ matrix[:3, 3]
        return cls(tuple(int(n) for n in shape), tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist()))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, float).reshape(3, 3)

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix taking (i, j, k, 1) voxel indices to RAS millimetres: Slicer's IJKToRAS."""
        matrix = np.eye(4)
        matrix[:3, :3] = LPS_TO_RAS @ self.direction_matrix @ np.diag(self.spacing)
        matrix[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin, float)
        return matrix

    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras())

    def to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices (shape (..., 3)) -> RAS points."""
        ijk = np.asarray(ijk, float)
        return ijk @ self.ijk_to_ras()[:3, :3].T + self.ijk_to_ras()[:3, 3]

    def to_ijk(self, ras: np.ndarray) -> np.ndarray:
        """RAS points (shape (..., 3)) -> continuous (i, j, k) indices."""
        ras = np.asarray(ras, float)
        inverse = self.ras_to_ijk()
        return ras @ inverse[:3, :3].T + inverse[:3, 3]

    def slice_axis(self, axis: str) -> int:
        """The numpy axis (0 = k) that slices along anatomical ``axis``, as the server picks it."""
        if axis not in AXES:
            raise ValueError(f"unknown axis {axis!r}: expected one of {', '.join(AXES)}")
        direction = np.abs(self.direction_matrix)
        best = max(permutations(range(3)), key=lambda p: sum(direction[r, p[r]] for r in range(3)))
        return 2 - best[_PHYSICAL_ROW[axis]]

    def plane_axes(self, axis: str) -> tuple[int, int, int]:
        """(slice, row, column) numpy axes of slices along ``axis``."""
        normal = self.slice_axis(axis)
        row, column = (n for n in range(3) if n != normal)
        return normal, row, column

    def num_slices(self, axis: str) -> int:
        return self.shape[self.slice_axis(axis)]


def numpy_to_ijk(numpy_index: np.ndarray) -> np.ndarray:
    """(k, j, i) numpy-order indices -> (i, j, k)."""
    return np.asarray(numpy_index, float)[..., ::-1]


def ijk_to_numpy(ijk: np.ndarray) -> np.ndarray:
    return np.asarray(ijk, float)[..., ::-1]
