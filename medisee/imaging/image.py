"""The in-memory image type shared by readers, slicing, windowing and writers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .slicing import slice_axis


@dataclass(eq=False)  # arrays make field-wise == ambiguous; compare arrays explicitly
class MedicalImage:
    """Pixel data plus the physical geometry needed to write aligned masks back.

    ``array`` is in SimpleITK's ``GetArrayFromImage`` order: ``(z, y, x)`` for
    volumes, ``(y, x)`` for 2D grayscale and ``(y, x, 3)`` uint8 for 2D colour.
    ``spacing``/``origin``/``direction`` are in SimpleITK's ``(x, y, z)`` order
    (LPS patient coordinates, direction row-major), with 2 or 3 components
    (4 or 9 for ``direction``). The number of spacing components is the number
    of spatial dimensions, which is what tells a 2D RGB image from a 3D volume.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    modality: str | None = None
    source: str = ""
    source_format: str = ""

    def __post_init__(self) -> None:
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in self.direction)
        n = len(self.spacing)
        if n not in (2, 3) or len(self.origin) != n or len(self.direction) != n * n:
            raise ValueError(
                f"inconsistent geometry: spacing {self.spacing}, origin {self.origin}, "
                f"direction {self.direction} (expected 2 or 3 spatial dimensions)"
            )
        rgb = n == 2 and self.array.ndim == 3 and self.array.shape[-1] == 3
        if self.array.ndim != n and not rgb:
            raise ValueError(f"array shape {self.array.shape} does not match a {n}D image")

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3); colour channels are not counted."""
        return len(self.spacing)

    @property
    def is_volume(self) -> bool:
        return self.ndim == 3

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == self.ndim + 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial array shape, ``(z, y, x)`` or ``(y, x)``: the shape a mask must have."""
        return tuple(self.array.shape[: self.ndim])

    def num_slices(self, axis: str = "axial") -> int:
        """Number of slices along an anatomical axis (see :mod:`.slicing`); 1 for 2D images."""
        ax = slice_axis(self, axis)  # also validates the axis name for 2D images
        return 1 if self.ndim == 2 else int(self.array.shape[ax])

    def to_sitk(self) -> sitk.Image:
        """SimpleITK image with this image's pixels and exact geometry."""
        img = sitk.GetImageFromArray(self.array, isVector=self.is_rgb)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    @classmethod
    def from_sitk(
        cls,
        img: sitk.Image,
        modality: str | None = None,
        source: str = "",
        source_format: str = "",
    ) -> MedicalImage:
        """Wrap a SimpleITK image, copying its pixels and geometry unchanged."""
        return cls(
            array=sitk.GetArrayFromImage(img),
            spacing=img.GetSpacing(),
            origin=img.GetOrigin(),
            direction=img.GetDirection(),
            modality=modality,
            source=source,
            source_format=source_format,
        )
