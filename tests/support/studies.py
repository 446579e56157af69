"""Small synthetic CT studies for the server tests (NIfTI volumes and a DICOM series)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medisee.data.demo.ct_phantom import generate_phantom
from medisee.imaging import write_dicom_series

SHAPE = (8, 96, 96)
SPACING = (3.0, 3.0, 25.0)  # 8 slices through 200 mm: chest to kidneys


def write_phantom(seed: int, folder: Path, name: str) -> Path:
    """Phantom ``seed`` as ``folder/name.nii.gz`` (HU, with its geometry)."""
    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING)
    path = folder / f"{name}.nii.gz"
    sitk.WriteImage(phantom.to_medical_image().to_sitk(), str(path), useCompression=True)
    return path


def write_phantom_series(seed: int, folder: Path) -> Path:
    """Phantom ``seed`` as a DICOM series in ``folder`` (an oblique-free CT with a non-zero origin)."""
    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING)
    write_dicom_series(phantom.volume_hu, folder, spacing=phantom.spacing, origin=(-120.0, -130.0, 40.0),
                       patient_id="MEDISEE-TEST", series_description="MediSee test phantom")
    return folder


def corrected_label(seed: int, folder: Path, names: dict[int, str]) -> Path:
    """What a radiologist would submit for phantom ``seed``: ``names`` maps label value -> structure."""
    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING)
    labels = np.zeros(phantom.shape, np.uint8)
    for value, structure in names.items():
        labels[phantom.masks[structure]] = value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(phantom.to_medical_image().to_sitk())
    path = folder / f"label-{seed}.nii.gz"
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def write_study_set(root: Path) -> Path:
    """``root/studies`` (two CT studies as NIfTI, the datastore) and ``root/dicom/ct-c`` (a third
    as a DICOM series, read by its server-side path or stored in Orthanc). Returns ``root``."""
    (root / "studies").mkdir(parents=True)
    write_phantom(11, root / "studies", "ct-a")
    write_phantom(12, root / "studies", "ct-b")
    write_phantom_series(13, root / "dicom" / "ct-c")
    return root


def structure_box(seed: int, structure: str, index: int) -> list[float]:
    """The pixel box ``[x0, y0, x1, y1]`` (x = column) of ``structure`` on axial slice
    ``index`` of phantom ``seed``: what a radiologist would draw around it."""
    mask = generate_phantom(seed, shape=SHAPE, spacing=SPACING).masks[structure][index]
    rows, cols = np.nonzero(mask)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
