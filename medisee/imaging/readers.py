"""``read_image``: one entry point for DICOM, NIfTI, NRRD, MetaImage, PNG and JPEG."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from PIL import Image, ImageOps
from pydicom.misc import is_dicom

from ._sitk import corrupt, read_sitk, to_medical_image
from .dicom_reader import read_dicom_file, read_dicom_series
from .errors import ImageReadError
from .image import MedicalImage

_SITK_FORMATS = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
_PIL_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def read_image(path: str | Path) -> MedicalImage:
    """Read a medical image, choosing the reader from what ``path`` is.

    A folder is read as a DICOM series (the largest one if there are several);
    a file by its extension, or as DICOM if it has the DICOM preamble.
    Raises :class:`ImageReadError` with a one-line message for any bad input.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise ImageReadError(f"{path}: permission denied")
    if path.is_dir():
        return read_dicom_series(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    if suffix in _SITK_FORMATS:
        if _SITK_FORMATS[suffix] == "nifti":
            _check_nifti(path)
        return to_medical_image(read_sitk(path), path, None, _SITK_FORMATS[suffix])
    if suffix in _PIL_FORMATS:
        return _read_pil(path, _PIL_FORMATS[suffix])
    if suffix == ".dcm" or is_dicom(path):
        return read_dicom_file(path)
    raise ImageReadError(f"{path}: not a DICOM, NIfTI, NRRD, PNG or JPEG file")


def _check_nifti(path: Path) -> None:
    """Reject empty and truncated NIfTI files, which SimpleITK reads silently (zero-filled)."""
    try:
        header = nib.load(path).header
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise corrupt(path) from exc
    shape = header.get_data_shape()
    if not shape or 0 in shape:
        raise ImageReadError(f"{path}: empty image (size {'x'.join(map(str, shape)) or '0'})")
    needed = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    if path.name.lower().endswith(".gz"):
        try:  # the uncompressed size is only known by decompressing; this also checks the CRC
            with gzip.open(path, "rb") as stream:
                available = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 24), b""))
        except (OSError, EOFError, zlib.error) as exc:
            raise corrupt(path) from exc
    else:
        available = path.stat().st_size
    if available < needed:
        raise corrupt(path)


def _read_pil(path: Path, source_format: str) -> MedicalImage:
    """Grayscale stays ``(y, x)`` (16-bit kept); anything with colour or a palette becomes RGB."""
    try:
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened)  # pixels as viewers show camera photos
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise corrupt(path) from exc
    if img.mode in ("1", "LA", "La"):
        img = img.convert("L")
    elif img.mode not in ("L", "I", "F") and not img.mode.startswith("I;16"):
        img = img.convert("RGB")
    array = np.array(img)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # "I;16B" arrives big-endian
    return MedicalImage(
        array=array,
        spacing=(1.0, 1.0),
        origin=(0.0, 0.0),
        direction=(1.0, 0.0, 0.0, 1.0),
        source=str(path),
        source_format=source_format,
    )
