"""SimpleITK reading and the checks that turn its images into MedicalImage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import ImageReadError
from .image import MedicalImage


def corrupt(path: Path) -> ImageReadError:
    return ImageReadError(f"{path}: cannot read image data (file is corrupt or truncated)")


def read_sitk(path: Path, image_io: str = "") -> sitk.Image:
    """Read one file with SimpleITK, optionally forcing an ImageIO (e.g. "GDCMImageIO")."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise corrupt(path) from exc


def _is_single_rgb_plane(img: sitk.Image) -> bool:
    size = img.GetSize()
    return (
        img.GetPixelID() == sitk.sitkVectorUInt8
        and img.GetNumberOfComponentsPerPixel() in (3, 4)
        and (img.GetDimension() == 2 or (img.GetDimension() == 3 and size[2] == 1))
    )


def to_medical_image(img: sitk.Image, path: Path, modality: str | None, source_format: str) -> MedicalImage:
    """Check ``img`` is a non-empty 2D image or 3D volume and wrap it.

    Colour is accepted only as one 8-bit RGB(A) plane, which becomes a 2D
    ``(y, x, 3)`` image (alpha dropped); other vector images are rejected.
    """
    size = img.GetSize()
    dim, components = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
    size_text = "x".join(str(s) for s in size)
    if 0 in size:
        raise ImageReadError(f"{path}: empty image (size {size_text})")
    if components > 1 and _is_single_rgb_plane(img):
        if dim == 3:
            img = img[:, :, 0]
    elif dim not in (2, 3) or components > 1:
        what = f"{dim}D" + (f" with {components} components per pixel" if components > 1 else "")
        raise ImageReadError(
            f"{path}: unsupported image dimensions ({what}, size {size_text}): "
            "expected a 2D image or a 3D volume"
        )
    array = sitk.GetArrayFromImage(img)
    if components > 1:
        array = np.ascontiguousarray(array[..., :3])
    return MedicalImage(
        array=array,
        spacing=img.GetSpacing(),
        origin=img.GetOrigin(),
        direction=img.GetDirection(),
        modality=modality,
        source=str(path),
        source_format=source_format,
    )
