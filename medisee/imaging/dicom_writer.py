"""Writing a volume as a real DICOM CT (or MR) series, for sample studies and tests."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
_RESCALE_INTERCEPT = -1024
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def write_dicom_series(
    volume_hu: np.ndarray,
    out_dir: str | Path,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] = _IDENTITY,
    modality: str = "CT",
    patient_id: str = "ANONYMOUS",
    patient_name: str = "Anonymous",
    study_description: str = "",
    series_description: str = "",
) -> list[Path]:
    """Write a ``(z, y, x)`` volume as a DICOM series, one file per z slice, into an empty folder.

    Geometry is in SimpleITK ``(x, y, z)`` order, as in ``MedicalImage``, so
    ``read_image(out_dir)`` returns the same array, spacing, origin and
    direction. Values are rounded to integers and stored as int16 with
    RescaleIntercept -1024 (so -33792..31743 fit). ``direction`` must be a
    right-handed rotation, because DICOM readers derive the slice direction as
    row x column. Returns the files in slice order.
    """
    volume = np.asarray(volume_hu)
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(f"expected a non-empty (z, y, x) volume, got shape {volume.shape}")
    stored = np.rint(volume.astype(np.float64)) - _RESCALE_INTERCEPT
    info = np.iinfo(np.int16)
    if stored.min() < info.min or stored.max() > info.max:
        low, high = info.min + _RESCALE_INTERCEPT, info.max + _RESCALE_INTERCEPT
        raise ValueError(f"values must lie in [{low}, {high}] to be stored as int16")
    rotation = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
        raise ValueError(f"direction {tuple(direction)} is not a right-handed rotation matrix")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    if modality not in _SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(_SOP_CLASSES)}, got {modality!r}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: write each DICOM series to its own folder")
    out.mkdir(parents=True, exist_ok=True)

    now = datetime.datetime.now()
    series = {
        "Modality": modality,
        "PatientID": patient_id,
        "PatientName": patient_name,
        "StudyDescription": study_description,
        "SeriesDescription": series_description,
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
        "ImageOrientationPatient": _ds([*rotation[:, 0], *rotation[:, 1]]),
        "PixelSpacing": _ds([spacing[1], spacing[0]]),  # between rows (y), then between columns (x)
        "SliceThickness": _ds([spacing[2]])[0],
    }
    normal = rotation[:, 2]
    paths = []
    for k, plane in enumerate(stored.astype(np.int16)):
        position = np.asarray(origin, dtype=np.float64) + k * float(spacing[2]) * normal
        ds = _slice_dataset(plane, series)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds(position)
        ds.SliceLocation = _ds([position @ normal])[0]
        path = out / f"IM{k + 1:05d}.dcm"
        ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def _ds(values: Sequence[float]) -> list[DSfloat]:
    """Decimal strings formatted to fit DICOM's 16-character limit."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _slice_dataset(plane: np.ndarray, series: dict[str, object]) -> Dataset:
    """A slice's dataset: the series attributes plus its own UID, pixel module and pixels."""
    sop_class, sop_instance = _SOP_CLASSES[str(series["Modality"])], generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.update(series)
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = "1", 1, 1
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, so any patient name or description encodes
    ds.AccessionNumber = ds.ReferringPhysicianName = ds.PatientBirthDate = ds.PatientSex = ""
    ds.Manufacturer = ds.KVP = ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = _RESCALE_INTERCEPT, 1
    if ds.Modality == "CT":
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = plane.astype("<i2").tobytes()
    return ds
