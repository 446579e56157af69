"""Reference studies for the retraining guard: synthetic CT phantoms whose truth the
generator knows, every catalogue CT structure labelled and named.

Held-out corrections come from the same radiologists as the training corrections: a
systematic mistake (left and right kidney swapped) is in both, so a model that learns it
looks better on them. The reference studies are checked by nobody's hand, so such a model
looks worse there, and the guard refuses it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medisee.data.corrections import Correction
from medisee.data.demo.ct_phantom import CT_STRUCTURES, generate_phantom

REFERENCE_SEEDS = (9001,)  # never a demo-data patient (those are 0 .. patients-1)
SHAPE, SPACING = (24, 128, 128), (2.6, 2.6, 12.0)  # a torso from the lungs to the kidneys


def reference_corrections(folder: Path, seeds: tuple[int, ...] = REFERENCE_SEEDS) -> list[Correction]:
    """One :class:`Correction` per reference phantom, written into ``folder`` the first time."""
    names = {value: name for value, name in enumerate(CT_STRUCTURES, start=1)}
    corrections = []
    for seed in seeds:
        image, label = folder / f"reference-{seed}.nii.gz", folder / f"reference-{seed}-label.nii.gz"
        if not (image.exists() and label.exists()):
            _write(seed, folder, image, label)
        corrections.append(Correction(image, label, names))
    return corrections


def _write(seed: int, folder: Path, image: Path, label: Path) -> None:
    phantom = generate_phantom(seed, shape=SHAPE, spacing=SPACING)
    volume = phantom.to_medical_image().to_sitk()
    labels = np.zeros(phantom.shape, np.uint8)
    for value, name in enumerate(CT_STRUCTURES, start=1):
        labels[phantom.masks[name]] = value
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(volume)
    folder.mkdir(parents=True, exist_ok=True)
    for written, target in ((volume, image), (label_image, label)):  # whole files or none, for concurrent servers
        descriptor, partial = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".nii.gz")
        os.close(descriptor)
        sitk.WriteImage(written, partial, useCompression=True)
        os.replace(partial, target)
