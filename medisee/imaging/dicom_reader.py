"""DICOM reading: whole series from a folder, or one (single- or multi-frame) file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ._sitk import corrupt, read_sitk, to_medical_image
from .errors import ImageReadError
from .image import MedicalImage

logger = logging.getLogger(__name__)


def read_dicom_series(folder: Path) -> MedicalImage:
    """Read the largest DICOM series in ``folder``, slices sorted by position (GDCM)."""
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series_ids = ()
    if not series_ids:
        raise ImageReadError(f"no DICOM series found in {folder}")
    files = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files[sid]))
    if len(series_ids) > 1:
        ignored = ", ".join(f"{sid} ({len(files[sid])} files)" for sid in series_ids if sid != chosen)
        logger.warning(
            "%s holds %d DICOM series; reading %s (%d files), ignoring %s",
            folder, len(series_ids), chosen, len(files[chosen]), ignored,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise corrupt(folder) from exc
    modality = _modality(_read_header(Path(files[chosen][0])))
    return _compact(to_medical_image(img, folder, modality, "dicom-series"))


def read_dicom_file(path: Path) -> MedicalImage:
    """Read exactly this file (never its siblings) as a 3D image.

    A single frame becomes a ``(1, y, x)`` volume so its patient position and
    orientation are kept; frames of a multi-frame file are stacked along z.
    """
    modality = _modality(_read_header(path))
    try:
        img = read_sitk(path, "GDCMImageIO")
    except ImageReadError:
        return _compact(_read_with_pydicom(path, modality))
    return _compact(to_medical_image(img, path, modality, "dicom-file"))


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many exception types on malformed files
        raise corrupt(path) from exc


def _modality(header: pydicom.Dataset) -> str | None:
    return str(header.get("Modality", "") or "").strip() or None


def _read_with_pydicom(path: Path, modality: str | None) -> MedicalImage:
    """Fallback for grayscale files GDCM cannot read; applies rescale slope/intercept itself."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many exception types on malformed files
        raise corrupt(path) from exc
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(f"{path}: DICOM file holds no image (no pixel data)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many exception types on bad or unsupported data
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed:
            raise ImageReadError(f"{path}: cannot decode {syntax.name} pixel data") from exc
        raise corrupt(path) from exc
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise corrupt(path)
    array = pixels.reshape(int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns))
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        array = array * slope + intercept
    row_spacing, col_spacing = (float(v) for v in ds.get("PixelSpacing", (1.0, 1.0)))
    z_spacing = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
    orientation = np.array(ds.get("ImageOrientationPatient", (1, 0, 0, 0, 1, 0)), dtype=float)
    row, col = orientation[:3], orientation[3:]
    return MedicalImage(
        array=array,
        spacing=(col_spacing, row_spacing, z_spacing),
        origin=tuple(float(v) for v in ds.get("ImagePositionPatient", (0, 0, 0))),
        direction=tuple(np.column_stack([row, col, np.cross(row, col)]).ravel()),
        modality=modality,
        source=str(path),
        source_format="dicom-file",
    )


def _compact(image: MedicalImage) -> MedicalImage:
    """Store rescaled DICOM values compactly: int16 when they fit (HU), else float32 for reals.

    GDCM returns int32 or float64 after rescaling, which doubles or quadruples memory.
    """
    array = image.array
    if array.dtype.itemsize > 2 and array.dtype.kind in "iuf":
        info = np.iinfo(np.int16)
        integral = array.dtype.kind != "f" or bool(np.all(np.mod(array, 1) == 0))
        if integral and info.min <= array.min() and array.max() <= info.max:
            image.array = array.astype(np.int16)
        elif array.dtype == np.float64:
            image.array = array.astype(np.float32)
    return image
