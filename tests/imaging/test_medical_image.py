import numpy as np
import pytest
import SimpleITK as sitk

from medisee.imaging import MedicalImage


def test_volume_properties(volume_image):
    assert volume_image.ndim == 3
    assert volume_image.is_volume and not volume_image.is_rgb
    assert volume_image.shape == (5, 6, 7)


def test_ndim_comes_from_geometry_not_array_shape():
    # A volume only 3 voxels wide must not be mistaken for a 2D RGB image.
    narrow = MedicalImage(np.zeros((4, 5, 3), np.int16), (1, 1, 1), (0, 0, 0), np.eye(3).ravel())
    rgb = MedicalImage(np.zeros((4, 5, 3), np.uint8), (1, 1), (0, 0), (1, 0, 0, 1))
    assert (narrow.ndim, narrow.is_rgb, narrow.shape) == (3, False, (4, 5, 3))
    assert (rgb.ndim, rgb.is_rgb, rgb.is_volume, rgb.shape) == (2, True, False, (4, 5))
    assert rgb.num_slices() == 1


@pytest.mark.parametrize(
    "array, spacing, origin, direction",
    [
        (np.zeros((2, 3, 4)), (1, 1), (0, 0), (1, 0, 0, 1)),  # 3D array, 2D geometry
        (np.zeros((3, 4)), (1, 1), (0, 0, 0), (1, 0, 0, 1)),  # origin has 3 components
        (np.zeros((2, 3, 4)), (1, 1, 1), (0, 0, 0), (1, 0, 0, 1)),  # 4-component direction
    ],
)
def test_inconsistent_geometry_is_rejected(array, spacing, origin, direction):
    with pytest.raises(ValueError):
        MedicalImage(array, spacing, origin, direction)


def test_sitk_round_trip_preserves_geometry_exactly(volume_image):
    img = volume_image.to_sitk()
    assert img.GetSize() == (7, 6, 5)
    back = MedicalImage.from_sitk(img, modality="CT", source="x", source_format="nrrd")
    np.testing.assert_array_equal(back.array, volume_image.array)
    assert back.spacing == volume_image.spacing
    assert back.origin == volume_image.origin
    assert back.direction == volume_image.direction
    assert (back.modality, back.source, back.source_format) == ("CT", "x", "nrrd")


def test_sitk_round_trip_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    image = MedicalImage(rgb, (0.5, 0.25), (1, 2), (1, 0, 0, 1))
    img = image.to_sitk()
    assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize() == (5, 4)
    back = MedicalImage.from_sitk(img)
    np.testing.assert_array_equal(back.array, rgb)
    assert back.spacing == (0.5, 0.25) and back.is_rgb
    assert sitk.GetArrayFromImage(img).shape == (4, 5, 3)
