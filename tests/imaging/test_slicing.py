from dataclasses import replace

import numpy as np
import pytest

from medisee.imaging import (
    AXES,
    MedicalImage,
    acquisition_axis,
    assemble_volume,
    extract_slice,
    iter_slices,
    slice_axis,
)

_c, _s = np.cos(np.radians(30)), np.sin(np.radians(30))
OBLIQUE = (1.0, 0.0, 0.0, 0.0, _c, -_s, 0.0, _s, _c)  # tilted 30 degrees about L-R (gantry tilt)


def test_identity_direction_axes(ct_volume):
    image = MedicalImage(ct_volume, (1, 1, 1), (0, 0, 0), np.eye(3).ravel())
    assert [slice_axis(image, axis) for axis in AXES] == [0, 1, 2]
    assert [image.num_slices(axis) for axis in AXES] == [5, 6, 7]
    assert acquisition_axis(image) == "axial"


def test_sagittal_acquisition_axes(ct_volume, sagittal_direction):
    # Array axis 0 runs L-R, axis 1 S-I (the column direction), axis 2 A-P (the row direction).
    image = MedicalImage(ct_volume, (1, 1, 1), (0, 0, 0), sagittal_direction)
    assert {axis: slice_axis(image, axis) for axis in AXES} == {"axial": 1, "coronal": 2, "sagittal": 0}
    assert acquisition_axis(image) == "sagittal"
    np.testing.assert_array_equal(extract_slice(image, 3, "axial"), ct_volume[:, 3, :])
    np.testing.assert_array_equal(extract_slice(image, 4, "coronal"), ct_volume[:, :, 4])
    np.testing.assert_array_equal(extract_slice(image, 2, "sagittal"), ct_volume[2])


def test_oblique_direction_picks_the_closest_axis(ct_volume):
    image = MedicalImage(ct_volume, (1, 1, 1), (0, 0, 0), OBLIQUE)
    assert [slice_axis(image, axis) for axis in AXES] == [0, 1, 2]


@pytest.mark.parametrize("axis", AXES)
def test_assemble_is_the_inverse_of_extract(volume_image, axis):
    planes = list(iter_slices(volume_image, axis))
    assert len(planes) == volume_image.num_slices(axis)
    assert all(plane.ndim == 2 for plane in planes)
    rebuilt = assemble_volume(planes, volume_image, axis, dtype=volume_image.array.dtype)
    np.testing.assert_array_equal(rebuilt, volume_image.array)


@pytest.mark.parametrize("axis", AXES)
def test_assemble_from_a_partial_dict(volume_image, axis):
    plane = np.ones_like(extract_slice(volume_image, 1, axis), dtype=np.uint8)
    mask = assemble_volume({1: plane}, volume_image, axis)
    assert mask.dtype == np.uint8 and mask.shape == volume_image.shape
    np.testing.assert_array_equal(extract_slice(replace(volume_image, array=mask), 1, axis), plane)
    assert mask.sum() == plane.sum()


def test_out_of_range_index(ct_volume):
    image = MedicalImage(ct_volume, (1, 1, 1), (0, 0, 0), np.eye(3).ravel())
    with pytest.raises(IndexError, match=r"^slice 5 out of range: the axial axis has 5 slices \(0\.\.4\)$"):
        extract_slice(image, 5)
    with pytest.raises(IndexError, match=r"^slice -1 out of range: the coronal axis has 6 slices \(0\.\.5\)$"):
        extract_slice(image, -1, "coronal")
    with pytest.raises(IndexError, match="slice 9 out of range: the sagittal axis has 7 slices"):
        assemble_volume({9: np.zeros((5, 6))}, image, "sagittal")


def test_bad_axis_and_plane_shapes(ct_volume):
    image = MedicalImage(ct_volume, (1, 1, 1), (0, 0, 0), np.eye(3).ravel())
    with pytest.raises(ValueError, match="unknown slice axis 'transverse'"):
        extract_slice(image, 0, "transverse")
    with pytest.raises(ValueError, match=r"slice 0 has shape \(7, 6\), expected \(6, 7\)"):
        assemble_volume({0: np.zeros((7, 6))}, image)
    with pytest.raises(ValueError, match="got 4 slices, but the axial axis has 5"):
        assemble_volume([np.zeros((6, 7))] * 4, image)


@pytest.mark.parametrize("rgb", [False, True])
def test_2d_image_is_one_axial_slice(rgb):
    shape = (4, 5, 3) if rgb else (4, 5)
    array = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    image = MedicalImage(array, (1, 1), (0, 0), (1, 0, 0, 1))
    assert slice_axis(image, "axial") == 0 and image.num_slices() == 1
    assert acquisition_axis(image) == "axial"
    np.testing.assert_array_equal(extract_slice(image, 0), array)
    assert [p.shape for p in iter_slices(image)] == [shape]
    mask = assemble_volume([np.ones((4, 5))], image)
    assert mask.shape == (4, 5) and mask.all()
    with pytest.raises(ValueError, match="only the 'axial' slice axis"):
        extract_slice(image, 0, "coronal")
    with pytest.raises(IndexError, match=r"the axial axis has 1 slices \(0\.\.0\)"):
        extract_slice(image, 1)
