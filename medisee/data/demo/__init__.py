"""Offline demo data: synthetic CT phantoms and augmented MNI152 brain MRI, generated, never downloaded.

* :mod:`.ct_phantom`: :func:`generate_phantom` gives an abdominal/thoracic CT volume in
  Hounsfield units with masks of ten structures.
* :mod:`.brain`: :func:`generate_brain` gives an augmented copy of the MNI152 (ICBM 2009a) T1
  template shipped in the nilearn wheel, with grey matter, white matter, lateral ventricles
  and whole-brain masks.
* :mod:`.build`: :func:`build_demo_dataset` writes volumes (DICOM, NIfTI), PNG slices and
  masks, MLMR-SD jsonl splits and a manifest.

Array conventions (both generators): ``(z, y, x)`` arrays in SimpleITK order with identity
direction in DICOM LPS, i.e. column index -> patient left, row index -> posterior, slice index
-> superior (slice 0 is the most inferior). Axial slices shown as stored are in radiological
convention (patient right on the image left, anterior at the top).
"""

from .brain import BRAIN_STRUCTURES, BrainVolume, generate_brain
from .build import build_demo_dataset
from .ct_phantom import CT_STRUCTURES, Phantom, generate_phantom

__all__ = [
    "BRAIN_STRUCTURES", "CT_STRUCTURES", "BrainVolume", "Phantom",
    "build_demo_dataset", "generate_brain", "generate_phantom",
]  # fmt: skip
