"""Anatomical slicing that follows the image's orientation, not its storage order.

Conventions:

* The anatomical axis of a slice is the axis it is perpendicular to: "axial"
  slices stack along the patient's S-I axis, "coronal" along A-P, "sagittal"
  along L-R. Each is mapped to the array axis whose physical direction (from the
  direction matrix) is most aligned with it, so a sagittally stored volume still
  gives true axial slices for ``axis="axial"``.
* Slices are returned as stored, not re-oriented for display: the slice's rows
  run along the lower-numbered remaining array axis and its columns along the
  higher one. ``assemble_volume`` uses the same convention, so it is the exact
  inverse of ``extract_slice``.
* A 2D image is a stack of one "axial" slice: the whole image, index 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import permutations
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

if TYPE_CHECKING:
    from .image import MedicalImage

AXES = ("axial", "coronal", "sagittal")
# Row of the LPS direction matrix (physical x=L-R, y=A-P, z=S-I) for each anatomical axis.
_PHYSICAL_ROW = {"axial": 2, "coronal": 1, "sagittal": 0}


def slice_axis(image: MedicalImage, axis: str) -> int:
    """Array axis index that slices ``image`` along the anatomical ``axis``.

    For 2D images only "axial" is valid; it returns 0, the axis of the
    one-slice stack ``image.array[np.newaxis]``.
    """
    if axis not in AXES:
        raise ValueError(f"unknown slice axis {axis!r}: expected one of {', '.join(AXES)}")
    if image.ndim == 2:
        if axis != "axial":
            raise ValueError(f"a 2D image has only the 'axial' slice axis, not {axis!r}")
        return 0
    direction = np.abs(np.asarray(image.direction).reshape(3, 3))
    # One-to-one assignment of physical to index axes maximising alignment; this
    # stays well defined for oblique acquisitions where a greedy pick could collide.
    best = max(permutations(range(3)), key=lambda p: sum(direction[r, p[r]] for r in range(3)))
    index_axis = best[_PHYSICAL_ROW[axis]]  # SimpleITK (x, y, z) index axis
    return 2 - index_axis  # numpy arrays are (z, y, x)


def acquisition_axis(image: MedicalImage) -> str:
    """Anatomical axis that array axis 0 runs along: the plane the images were acquired in.

    Useful for single-slice volumes (one DICOM file), which only make sense
    sliced along this axis.
    """
    if image.ndim == 2:
        return "axial"
    return next(axis for axis in AXES if slice_axis(image, axis) == 0)


def _stack(image: MedicalImage, axis: str) -> tuple[np.ndarray, int]:
    ax = slice_axis(image, axis)
    return (image.array[np.newaxis] if image.ndim == 2 else image.array), ax


def _check_index(index: int, count: int, axis: str) -> None:
    if not 0 <= index < count:
        raise IndexError(
            f"slice {index} out of range: the {axis} axis has {count} slices (0..{count - 1})"
        )


def extract_slice(image: MedicalImage, index: int, axis: str = "axial") -> np.ndarray:
    """The 2D plane ``index`` along anatomical ``axis``, as stored (see module docstring).

    Colour images give ``(y, x, 3)``. Returns a copy.
    """
    stack, ax = _stack(image, axis)
    _check_index(index, stack.shape[ax], axis)
    return np.take(stack, index, axis=ax)


def iter_slices(image: MedicalImage, axis: str = "axial") -> Iterator[np.ndarray]:
    """All slices along ``axis`` in index order (see :func:`extract_slice`)."""
    for index in range(image.num_slices(axis)):
        yield extract_slice(image, index, axis)


def assemble_volume(
    slices: Mapping[int, np.ndarray] | Sequence[np.ndarray],
    image: MedicalImage,
    axis: str = "axial",
    dtype: DTypeLike = np.uint8,
) -> np.ndarray:
    """Put 2D slices (e.g. masks) back at their indices: the inverse of :func:`extract_slice`.

    ``slices`` is either a mapping ``{index: plane}`` (missing slices stay zero)
    or a sequence with one plane per slice. The result has the image's spatial
    shape ``image.shape`` (colour channels dropped).
    """
    stack_shape = (1, *image.shape) if image.ndim == 2 else image.shape
    ax = slice_axis(image, axis)
    count = stack_shape[ax]
    if not isinstance(slices, Mapping):
        if len(slices) != count:
            raise ValueError(f"got {len(slices)} slices, but the {axis} axis has {count}")
        slices = dict(enumerate(slices))
    plane_shape = stack_shape[:ax] + stack_shape[ax + 1 :]
    out = np.zeros(stack_shape, dtype=dtype)
    for index, plane in slices.items():
        _check_index(index, count, axis)
        if np.shape(plane) != plane_shape:
            raise ValueError(
                f"slice {index} has shape {np.shape(plane)}, expected {plane_shape} for the {axis} axis"
            )
        np.moveaxis(out, ax, 0)[index] = plane
    return out[0] if image.ndim == 2 else out
