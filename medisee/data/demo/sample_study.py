"""The sample study: what a new MediSee server serves before it has any real data.

Layout of ``out`` (``studies/`` is ready to be MONAI Label's local datastore folder)::

    dicom/ct-phantom/IM*.dcm      a synthetic CT (ct_phantom.py) as a real DICOM series, for PACS/Orthanc
    studies/ct-phantom.nii.gz     the same CT, same geometry and values (int16 HU)
    studies/brain-mni.nii.gz      the MNI152 template from nilearn's wheel (brain.py), int16

The CT covers the phantom's 200 mm field of view whatever the number of slices (40 slices
give its native 5 mm; 64 give 3.125 mm). Writing is idempotent: an item already on disk is
kept when it reads back as what would be written (the CT is regenerated in memory, which is
cheap, and compared voxel by voxel), so a second run touches nothing MONAI Label indexed.
Each item is written in a hidden temporary folder inside ``out`` and renamed into place, so
neither a reader nor MONAI Label's file watcher ever sees half of one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...imaging import ImageReadError, MedicalImage, read_image, write_dicom_series
from . import brain as brain_module
from .ct_phantom import DEFAULT_SHAPE, DEFAULT_SPACING, Phantom, generate_phantom

log = logging.getLogger("medisee.demo")

CT_ID = "ct-phantom"
BRAIN_ID = "brain-mni"
DEFAULT_SLICES = DEFAULT_SHAPE[0]
FIELD_OF_VIEW_Z = DEFAULT_SHAPE[0] * DEFAULT_SPACING[2]  # mm covered by the CT, whatever the slice count
MIN_SLICES, MAX_SLICES = 2, 512
_ATOL = 1e-3  # mm; DICOM decimal strings and NIfTI float32 round geometry slightly differently


@dataclass(frozen=True)
class SampleStudy:
    """Where the sample study lies, and which of its files this call (re)wrote."""

    out: Path
    ct_dicom: Path
    ct_nifti: Path
    brain_nifti: Path
    written: tuple[Path, ...]

    @property
    def studies(self) -> Path:
        """The folder to give MONAI Label as ``--studies``."""
        return self.ct_nifti.parent


def sample_phantom(seed: int = 0, slices: int = DEFAULT_SLICES) -> Phantom:
    """The sample CT: phantom ``seed`` on ``slices`` axial slices over the phantom's full z range."""
    if not MIN_SLICES <= slices <= MAX_SLICES:
        raise ValueError(f"slices must be between {MIN_SLICES} and {MAX_SLICES}, got {slices}")
    spacing = (DEFAULT_SPACING[0], DEFAULT_SPACING[1], FIELD_OF_VIEW_Z / slices)
    return generate_phantom(seed, patient_id=f"sample-ct-{seed}", shape=(slices, *DEFAULT_SHAPE[1:]), spacing=spacing)


def build_sample_study(out: str | Path, seed: int = 0, slices: int = DEFAULT_SLICES) -> SampleStudy:
    """Write whatever is missing or different of the sample study into ``out`` (see the module doc)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; give --out a new or existing folder")
    phantom = sample_phantom(seed, slices)
    ct = phantom.to_medical_image()
    study = SampleStudy(out, out / "dicom" / CT_ID, out / "studies" / f"{CT_ID}.nii.gz",
                        out / "studies" / f"{BRAIN_ID}.nii.gz", ())
    for folder in (study.ct_dicom.parent, study.studies):
        folder.mkdir(parents=True, exist_ok=True)
    written = []
    if _ensure(out, study.ct_dicom, lambda path: _same(path, ct), lambda path: _write_ct_dicom(phantom, seed, path)):
        written.append(study.ct_dicom)
    if _ensure(out, study.ct_nifti, lambda path: _same(path, ct), lambda path: _write_nifti(ct, path)):
        written.append(study.ct_nifti)
    if _ensure(out, study.brain_nifti, _is_brain, lambda path: _write_nifti(_brain_image(), path)):
        written.append(study.brain_nifti)
    return replace(study, written=tuple(written))


def _ensure(out: Path, target: Path, valid: Callable[[Path], bool], write: Callable[[Path], None]) -> bool:
    """Keep ``target`` if it is valid, else write it in a hidden folder of ``out`` (outside the datastore
    folder, whose watcher would index a half-written ``*.nii.gz``) and rename it into place. True if written."""
    if target.exists() and valid(target):
        log.info("kept %s (already there and up to date)", target)
        return False
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".sample-study-"))
    try:
        fresh = staging / target.name
        write(fresh)
        if target.exists() and (target.is_dir() or fresh.is_dir()):  # a rename replaces only a file by a file
            os.replace(target, staging / f"old-{target.name}")
        os.replace(fresh, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", target)
    return True


def _same(path: Path, expected: MedicalImage) -> bool:
    """``path`` reads back with ``expected``'s voxels and geometry."""
    try:
        image = read_image(path)
    except ImageReadError as err:
        log.warning("replacing %s: %s", path, err)
        return False
    return (image.shape == expected.shape and np.array_equal(image.array, expected.array)
            and all(np.allclose(getattr(image, key), getattr(expected, key), atol=_ATOL)
                    for key in ("spacing", "origin", "direction")))


def _is_brain(path: Path) -> bool:
    """A readable, non-empty volume on the brain grid (the template itself never changes)."""
    try:
        image = read_image(path)
    except ImageReadError as err:
        log.warning("replacing %s: %s", path, err)
        return False
    return (image.shape == brain_module.DEFAULT_SHAPE and bool(image.array.any())
            and np.allclose(image.spacing, (brain_module.DEFAULT_SPACING,) * 3, atol=_ATOL))


def _write_ct_dicom(phantom: Phantom, seed: int, folder: Path) -> None:
    write_dicom_series(phantom.volume_hu, folder, spacing=phantom.spacing, origin=phantom.origin, modality="CT",
                       patient_id="MEDISEE-SAMPLE", patient_name="MediSee^Sample", study_description="MediSee sample study",
                       series_description=f"Synthetic CT phantom (seed {seed}, {phantom.shape[0]} slices)")


def _write_nifti(image: MedicalImage, path: Path) -> None:
    sitk.WriteImage(image.to_sitk(), str(path), useCompression=True)


def _brain_image() -> MedicalImage:
    """The MNI152 T1 template itself (no augmentation) on the brain grid, as int16."""
    volume = brain_module.generate_brain(0, patient_id=BRAIN_ID, augment=False)
    image = volume.to_medical_image()
    image.array = np.clip(np.rint(image.array), 0, np.iinfo(np.int16).max).astype(np.int16)
    return image
