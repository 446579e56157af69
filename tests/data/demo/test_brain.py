"""Augmented MNI152 brains: template masks, augmentation, orientation, slice selection."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medisee.data.demo import brain
from medisee.imaging import extract_slice

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                reason="the MNI152 template ships with nilearn (a project dependency)")


@pytest.fixture(scope="module")
def template():
    t1, labels = brain.template_masks()
    return sitk.GetArrayFromImage(t1), brain._masks_from_labels(sitk.GetArrayFromImage(labels)), t1


@pytest.fixture(scope="module")
def patients():
    return {seed: brain.generate_brain(seed, f"mr{seed}") for seed in (0, 1)}


def test_template_files_are_found_without_importing_nilearn():
    paths = brain.template_paths()
    assert set(paths) == {"t1", "gm", "wm"} and all(p.is_file() for p in paths.values())
    assert all("nilearn" in p.parts and p.name.startswith("mni_icbm152_") for p in paths.values())
    code = ("import sys; from medisee.data.demo.brain import template_paths; template_paths(); "
            "sys.exit('nilearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_template_masks_are_plausible(template):
    t1, masks, image = template
    gm, wm, vent, whole = masks["grey matter"], masks["white matter"], masks["lateral ventricles"], masks["brain"]
    assert not (gm & wm).any() and not (vent & (gm | wm)).any()
    assert not ((gm | wm | vent) & ~whole).any()
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    # MNI152 space is larger than an average head: ~1.9 l of brain, ~1.1 l grey and ~0.6 l white matter
    assert 1300 < whole.sum() * voxel_ml < 2300
    assert 600 < gm.sum() * voxel_ml < 1300 and 400 < wm.sum() * voxel_ml < 900
    assert 5 < vent.sum() * voxel_ml < 60
    # two roughly symmetric lateral ventricles either side of the midline, dark on T1
    *_, x = brain._index_coordinates(image)
    left, right = vent & (x > 0), vent & (x < 0)
    assert 0.6 < left.sum() / right.sum() < 1.6
    assert np.median(t1[vent]) < 0.6 * np.median(t1[gm])
    # the ventricles are near the centre of the brain
    vz, vy, vx = (np.argwhere(vent).mean(0) - np.argwhere(whole).mean(0))
    assert abs(vx) < 5 and abs(vy) < 30 and abs(vz) < 30


def test_generated_masks(patients):
    b = patients[0]
    assert b.image.dtype == np.float32 and b.image.shape == brain.DEFAULT_SHAPE
    assert tuple(b.masks) == brain.BRAIN_STRUCTURES
    gm, wm, vent, whole = (b.masks[n] for n in ("grey matter", "white matter", "lateral ventricles", "brain"))
    assert not (gm & wm).any() and not (vent & (gm | wm)).any() and not ((gm | wm | vent) & ~whole).any()
    mid = b.image.shape[0] // 2
    z = np.flatnonzero(vent.any(axis=(1, 2)))
    assert z.size and z.min() <= mid + 15 and z.max() >= mid - 5  # ventricles on central axial slices
    for name in ("grey matter", "white matter", "brain"):
        assert b.masks[name][mid].sum() > 500
    top = np.flatnonzero(whole.any(axis=(1, 2))).max()
    assert whole[top - 3].any() and not vent[top - 10 :].any()  # high axial slices lack the ventricles
    # brain tissue is brighter than background and the ventricles
    assert np.median(b.image[wm]) > np.median(b.image[gm]) > np.median(b.image[vent]) > np.median(b.image[~whole])


def test_same_seed_is_identical_and_seeds_differ(patients):
    again = brain.generate_brain(0, "mr0")
    assert np.array_equal(again.image, patients[0].image) and again.info == patients[0].info
    assert all(np.array_equal(again.masks[n], patients[0].masks[n]) for n in brain.BRAIN_STRUCTURES)
    assert not np.array_equal(patients[1].masks["brain"], patients[0].masks["brain"])
    assert patients[1].info["scale"] != patients[0].info["scale"]


def test_orientation_matches_the_template_in_ras():
    """Without augmentation, voxels agree with the template read independently through its RAS affine."""
    b = brain.generate_brain(0, augment=False)
    path = brain.template_paths()["t1"]
    nifti = nib.load(path)
    data = np.asarray(nifti.dataobj, dtype=np.float32)
    inverse = np.linalg.inv(nifti.affine)
    rng = np.random.default_rng(0)
    idx = np.argwhere(b.masks["brain"])[rng.choice(int(b.masks["brain"].sum()), 2000, replace=False)]
    lps = np.asarray(b.origin) + idx[:, ::-1] * np.asarray(b.spacing)  # (z, y, x) index -> LPS (x, y, z)
    ras = lps * np.array([-1, -1, 1])
    ijk = np.rint((inverse[:3, :3] @ ras.T).T + inverse[:3, 3]).astype(int)
    expected = data[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    got = b.image[idx[:, 0], idx[:, 1], idx[:, 2]] / 1000 * 255
    assert np.corrcoef(expected, got)[0, 1] > 0.9
    # and the column index grows toward the patient's left (LPS): the grid is identity-direction
    assert b.to_medical_image().direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_display_slices(patients):
    b = patients[0]
    image = b.to_medical_image()
    assert np.array_equal(brain.display_slice(b.image, "axial", 50), extract_slice(image, 50, "axial"))
    assert np.array_equal(brain.display_slice(b.image, "coronal", 60), extract_slice(image, 60, "coronal")[::-1])
    assert np.array_equal(brain.display_slice(b.image, "sagittal", 40), extract_slice(image, 40, "sagittal")[::-1])
    # coronal: superior at the top, so the brain's top rows belong to the vertex
    coronal = brain.display_slice(b.masks["brain"], "coronal", 60)
    rows = np.flatnonzero(coronal.any(axis=1))
    assert rows.min() < coronal.shape[0] - rows.max()


def test_slice_selection_mixes_present_and_absent_ventricles(patients):
    b = patients[1]
    chosen = brain.select_slices(b.masks, np.random.default_rng(0))
    assert {plane for plane, _ in chosen} == set(brain.PLANES)
    with_vent = [brain.display_slice(b.masks["lateral ventricles"], p, i).sum() >= 25 for p, i in chosen]
    assert any(with_vent) and not all(with_vent)
    for plane, index in chosen:
        assert brain.display_slice(b.masks["brain"], plane, index).sum() > 1000
