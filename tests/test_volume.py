"""Volume assembly on real geometry: votes, 3D components, gap closing, mL and RAS bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from medisee.imaging import MedicalImage, extract_slice
from medisee.predictor import Entity, Prediction
from medisee.volume import connected_structure, keep_structures, ras_bounds, structure_key, volume_entities, vote
from medisee.results import assemble

OBLIQUE = (math.cos(0.3), -math.sin(0.3), 0.0, math.sin(0.3), math.cos(0.3), 0.0, 0.0, 0.0, 1.0)


def _image(shape=(12, 20, 24), spacing=(0.8, 1.2, 3.0), direction=OBLIQUE, origin=(-10.0, 25.0, 40.0)) -> MedicalImage:
    return MedicalImage(np.zeros(shape, np.int16), spacing, origin, direction, modality="CT")


def _entity(phrase: str, mask: np.ndarray, score: float = 0.8) -> Entity:
    rows, cols = np.nonzero(mask)
    box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    return Entity(phrase=phrase, mask=mask, box=box, score=score, mask_quality=0.9)


def _plane(shape, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_vote_keeps_asked_and_majority_structures_only():
    plane = _plane((20, 24), 2, 6, 2, 6)
    predictions = [Prediction("", [_entity("liver", plane, 0.9)], slice_index=i) for i in range(6)]
    predictions[0].entities.append(_entity("right kidney", plane, 0.5))  # a stray answer on one slice
    predictions[1].entities.append(_entity("the spleen", plane, 0.2))
    assert vote(predictions) == ["liver"]
    assert vote(predictions, asked=["spleen"]) == ["liver", "spleen"]
    assert vote([Prediction("No.", [])]) == []


def test_structure_key_names_the_catalogue_structure():
    assert structure_key("the Liver") == "liver"
    assert structure_key("Left  kidney") == "left kidney"
    assert structure_key("Gallbladder") == "gallbladder"


def test_connected_structure_drops_strays_and_closes_short_gaps():
    image = _image()
    shape = image.shape[1:]
    masks = {i: _plane(shape, 5, 12, 5, 12) for i in (2, 3, 4, 6, 7)}  # a one-slice gap at 5
    masks[11] = _plane(shape, 5, 12, 5, 12)  # three empty slices later: too far, a separate piece
    masks[3] = masks[3] | _plane(shape, 16, 19, 18, 22)  # an in-plane stray
    solid = connected_structure(masks, image, "axial")
    on = np.nonzero(solid.any(axis=(1, 2)))[0].tolist()
    assert on == [2, 3, 4, 5, 6, 7]
    assert not solid[3, 16:19, 18:22].any()
    assert solid[5].sum() == 7 * 7  # the gap is the neighbours' common pixels



def test_connected_structure_keeps_a_narrower_section_as_found():
    """A spine's disc is narrower than the bodies on either side: only a slice the structure
    skips is filled, a slice with its own mask keeps it."""
    image = _image()
    shape = image.shape[1:]
    masks = {i: _plane(shape, 4, 14, 4, 14) for i in (2, 3, 6, 7)}
    masks[4] = masks[5] = _plane(shape, 8, 10, 8, 10)  # two narrow slices between wide ones
    solid = connected_structure(masks, image, "axial")
    assert solid[4].sum() == solid[5].sum() == 2 * 2
    assert solid[3].sum() == solid[6].sum() == 10 * 10

def test_volume_entities_measure_ml_and_ras_bounds_on_oblique_anisotropic_geometry():
    image = _image()
    labels = np.zeros(image.shape, np.uint8)
    labels[3:7, 4:9, 10:15] = 1  # z 3..6, y 4..8, x 10..14
    found = volume_entities(labels, {1: "liver"}, [], image, "axial")
    assert len(found) == 1
    liver = found[0]
    assert (liver.first_slice, liver.last_slice, liver.slice_count) == (3, 6, 4)
    assert liver.voxels == 4 * 5 * 5
    assert liver.volume_ml == pytest.approx(100 * 0.8 * 1.2 * 3.0 / 1000)
    assert liver.bounds_ijk == [10, 4, 3, 14, 8, 6]
    # the bounds are SimpleITK's own physical points of the outer voxel corners, in RAS
    itk = sitk.Image(24, 20, 12, sitk.sitkUInt8)
    itk.SetSpacing(image.spacing), itk.SetOrigin(image.origin), itk.SetDirection(image.direction)
    corners = np.array([itk.TransformContinuousIndexToPhysicalPoint((x, y, z))
                        for x in (9.5, 14.5) for y in (3.5, 8.5) for z in (2.5, 6.5)]) * [-1, -1, 1]
    assert liver.bounds_ras == pytest.approx([*corners.min(0), *corners.max(0)], abs=1e-3)
    assert ras_bounds(image, [0, 0, 0], [0, 0, 0])[2] == pytest.approx(40.0 - 1.5)


def test_keep_structures_names_one_entity_per_structure_along_another_axis():
    image = _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    plane_shape = extract_slice(image, 0, "coronal").shape  # (z, x)
    predictions = []
    for i in range(image.num_slices("coronal")):
        entities = [_entity("Liver", _plane(plane_shape, 2, 8, 3, 9))] if 5 <= i <= 12 else []
        if i == 16:
            entities = [_entity("liver", _plane(plane_shape, 2, 8, 3, 9), 0.3)]  # a second "liver" elsewhere
        predictions.append(Prediction("liver.", entities, slice_index=i))
    kept = vote(predictions)
    cleaned = keep_structures(predictions, kept, image, "coronal")
    result = assemble(cleaned, image, "coronal")
    assert result.label_names == {1: "liver"}
    assert sorted({e["slice"] for e in result.entities}) == list(range(5, 13))
    found = volume_entities(result.labels, result.label_names, cleaned, image, "coronal")
    assert [(v.phrase, v.first_slice, v.last_slice) for v in found] == [("liver", 5, 12)]
    assert found[0].voxels == 8 * 6 * 6
