"""The synthetic CT phantom: intensities, anatomy, layering, determinism."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medisee.data.demo.ct_phantom import CT_STRUCTURES, NOMINAL_HU, PHASES, _erode, generate_phantom
from medisee.imaging import extract_slice

SEEDS = range(6)


@pytest.fixture(scope="module")
def phantoms():
    return {seed: generate_phantom(seed, f"p{seed}") for seed in SEEDS}


def z_range(mask: np.ndarray) -> tuple[int, int] | None:
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    return (int(z.min()), int(z.max())) if z.size else None


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)  # (z, y, x)


def test_types_shapes_and_names(phantoms):
    p = phantoms[0]
    assert p.volume_hu.dtype == np.int16 and p.volume_hu.shape == (40, 160, 160)
    assert tuple(p.masks) == CT_STRUCTURES
    assert all(m.dtype == bool and m.shape == p.volume_hu.shape for m in p.masks.values())
    assert p.spacing == (2.5, 2.5, 5.0) and p.patient_id == "p0"
    assert p.info["phase"] in PHASES and 10 <= p.info["noise_sigma"] <= 25


def test_masks_are_disjoint_and_inside_the_body(phantoms):
    for p in phantoms.values():
        stack = np.stack(list(p.masks.values()))
        assert stack.sum(axis=0).max() <= 1
        assert not (stack.any(axis=0) & ~p.body).any()


def test_organ_intensities(phantoms):
    for p in phantoms.values():
        hu = p.info["hu"]

        def median(name):
            core = _erode(p.masks[name], 1)  # away from partial-volume edges
            return float(np.median(p.volume_hu[core]))

        for name in ("liver", "spleen", "aorta"):
            if p.masks[name].any():
                assert abs(median(name) - hu[name]) < 25, (p.patient_id, name, median(name), hu[name])
        for name in ("left kidney", "right kidney"):
            if p.masks[name].any():
                assert hu["kidney medulla"] - 30 < median(name) < hu["kidney cortex"] + 25
        lung = p.masks["left lung"] | p.masks["right lung"]
        assert -900 < np.median(p.volume_hu[_erode(lung, 1)]) < -750
        assert hu["myocardium"] - 30 < median("heart") < hu["blood"] + 30
        bone = p.volume_hu[p.masks["vertebra"]]
        assert 150 < np.median(bone) < 1000 and np.percentile(bone, 95) > 550  # cortical ring
        assert np.median(p.volume_hu[~p.body]) < -950  # air
        rim = p.body & ~_erode(p.body, 3) & _erode(p.body, 1)
        assert -160 < np.median(p.volume_hu[rim]) < -40  # subcutaneous fat


def test_nominal_values_match_unenhanced_ct():
    plain = NOMINAL_HU["non-contrast"]
    assert plain["liver"] == 60 and plain["spleen"] == 50 and plain["kidney cortex"] == 30 and plain["aorta"] == 40
    assert NOMINAL_HU["arterial"]["aorta"] >= 200


def test_organs_sit_in_their_z_ranges(phantoms):
    for p in phantoms.values():
        lungs = [z_range(p.masks[n]) for n in ("left lung", "right lung")]
        kidneys = [z_range(p.masks[n]) for n in ("left kidney", "right kidney") if p.masks[n].any()]
        heart, liver = z_range(p.masks["heart"]), z_range(p.masks["liver"])
        assert min(lo for lo, _ in lungs) >= 14 and max(hi for _, hi in lungs) == 39  # thorax: upper slices
        assert heart[0] >= 18 and heart[1] == 39
        assert max(hi for _, hi in kidneys) <= 30 and min(lo for lo, _ in kidneys) <= 6  # kidneys: lower slices
        assert kidneys[0][0] < liver[0] < lungs[0][0] < liver[1]  # liver between, overlapping the lung bases
        assert z_range(p.masks["vertebra"]) == (0, 39)
        # some slices lack some organs: that is where absent-target negatives come from
        assert not p.present(0).count("heart") and not p.present(39).count("left kidney")


def test_laterality_and_anterior_posterior_layout(phantoms):
    for p in phantoms.values():
        c = {name: centroid(m) for name, m in p.masks.items() if m.any()}
        centre_x = (p.volume_hu.shape[2] - 1) / 2
        # column index grows toward the patient's left: the liver shows on the image left
        assert c["liver"][2] < centre_x < c["stomach"][2]
        if "spleen" in c:
            assert c["spleen"][2] > centre_x and c["spleen"][1] > c["stomach"][1]  # left, posterior
        if "left kidney" in c and "right kidney" in c:
            assert c["left kidney"][2] > c["vertebra"][2] > c["right kidney"][2]
        assert c["left lung"][2] > c["right lung"][2]
        # row index grows toward posterior: aorta and heart lie in front of the spine
        assert c["aorta"][2] > c["vertebra"][2] - 1 and c["heart"][1] < c["vertebra"][1]
        lower = slice(0, 12)
        assert centroid(p.masks["aorta"][lower])[1] < centroid(p.masks["vertebra"][lower])[1]


def test_same_seed_is_identical_and_seeds_differ(phantoms):
    again = generate_phantom(0, "p0")
    assert np.array_equal(again.volume_hu, phantoms[0].volume_hu)
    assert all(np.array_equal(again.masks[n], phantoms[0].masks[n]) for n in CT_STRUCTURES)
    assert again.info == phantoms[0].info
    other = phantoms[1]
    assert not np.array_equal(other.volume_hu, phantoms[0].volume_hu)
    assert not np.array_equal(other.masks["liver"], phantoms[0].masks["liver"])


def test_missing_organs_have_empty_masks():
    seen = set()
    for seed in range(60):  # nephrectomy ~10 %, splenectomy ~5 %: both turn up well within 60 patients
        p = generate_phantom(seed)
        for name in p.info["missing"]:
            assert not p.masks[name].any()
            seen.add(name)
        for name in ("liver", "aorta", "vertebra", "heart", "stomach", "left lung", "right lung"):
            assert p.masks[name].any()
        if seen & {"left kidney", "right kidney"} and "spleen" in seen:
            break
    assert seen & {"left kidney", "right kidney"} and "spleen" in seen


def test_generation_is_fast():
    start = time.perf_counter()
    generate_phantom(123)
    assert time.perf_counter() - start < 2.0  # ~0.3 s here; the budget is 1 s per patient


def test_medical_image_geometry(phantoms):
    p = phantoms[2]
    image = p.to_medical_image()
    assert image.modality == "CT" and image.shape == p.volume_hu.shape
    assert image.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert np.array_equal(extract_slice(image, 7, "axial"), p.volume_hu[7])
    # the volume is centred left-right and front-back in physical space
    assert image.origin[0] == pytest.approx(-(160 - 1) / 2 * 2.5) and image.origin[2] == 0.0


def test_other_grids_keep_the_anatomy_in_millimetres():
    p = generate_phantom(0, shape=(20, 80, 80), spacing=(5.0, 5.0, 10.0))
    assert p.volume_hu.shape == (20, 80, 80)
    assert p.masks["liver"].any() and p.masks["left lung"][-1].any() and not p.masks["left lung"][0].any()
