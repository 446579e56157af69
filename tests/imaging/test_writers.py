import os

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file

from medisee.imaging import MedicalImage, read_image, write_mask, write_overlay_png
from medisee.imaging.writers import PALETTE


def _image_2d(shape=(6, 8)):
    return MedicalImage(np.zeros(shape, np.uint8), (1, 1), (0, 0), (1, 0, 0, 1), source_format="png")


def _mask(shape):
    mask = np.zeros(shape, np.uint8)
    mask[(slice(1, 3),) * len(shape)] = 1
    return mask


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nii", "mask.nrrd"])
def test_volume_mask_keeps_reference_geometry(tmp_path, volume_image, name):
    mask = _mask(volume_image.shape)
    path = write_mask(mask, volume_image, tmp_path / name)
    assert path == tmp_path / name
    back = read_image(path)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask)
    assert back.spacing == pytest.approx(volume_image.spacing, abs=1e-5)
    assert back.origin == pytest.approx(volume_image.origin, abs=1e-5)
    assert back.direction == pytest.approx(volume_image.direction, abs=1e-5)
    assert os.listdir(tmp_path) == [name]  # no temporary files left behind


def test_many_labels_are_written_as_uint16(tmp_path, volume_image):
    mask = _mask(volume_image.shape).astype(np.int64) * 300
    back = read_image(write_mask(mask, volume_image, tmp_path / "labels.nrrd"))
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, mask)


def test_png_mask_binary_is_0_255(tmp_path):
    mask = _mask((6, 8)).astype(bool)
    path = write_mask(mask, _image_2d(), tmp_path / "mask.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mask.astype(np.uint8) * 255)


def test_png_mask_labels_keep_values(tmp_path):
    mask = _mask((6, 8)) * 2
    mask[5, 7] = 1
    path = write_mask(mask, _image_2d(), tmp_path / "labels.png")
    np.testing.assert_array_equal(read_image(path).array, mask)


def test_png_mask_for_a_single_dicom_slice(tmp_path):
    reference = read_image(get_testdata_file("CT_small.dcm"))  # shape (1, 128, 128)
    path = write_mask(_mask(reference.shape), reference, tmp_path / "mask.png")
    assert read_image(path).array.shape == (128, 128)


def test_png_mask_needs_a_single_slice(tmp_path, volume_image):
    with pytest.raises(ValueError, match="PNG holds one slice, but the reference has 5"):
        write_mask(_mask(volume_image.shape), volume_image, tmp_path / "mask.png")


def test_mask_shape_mismatch_names_both_shapes(tmp_path, volume_image):
    message = r"mask shape \(5, 7, 6\) does not match the reference image shape \(5, 6, 7\)"
    with pytest.raises(ValueError, match=message):
        write_mask(np.zeros((5, 7, 6), np.uint8), volume_image, tmp_path / "mask.nii.gz")


@pytest.mark.parametrize("mask", [np.full((6, 8), -1), np.full((6, 8), 0.5)])
def test_mask_must_hold_integer_labels(tmp_path, mask):
    with pytest.raises(ValueError, match="non-negative integer labels"):
        write_mask(mask, _image_2d(), tmp_path / "mask.png")


def test_unsupported_mask_format(tmp_path):
    with pytest.raises(ValueError, match="unsupported mask format '.jpg'"):
        write_mask(np.zeros((6, 8), np.uint8), _image_2d(), tmp_path / "mask.jpg")


def test_failed_write_leaves_the_old_file(tmp_path, volume_image, monkeypatch):
    path = write_mask(_mask(volume_image.shape), volume_image, tmp_path / "mask.nii.gz")
    before = path.read_bytes()

    def broken_write(img, name, useCompression):
        open(name, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mask(np.zeros(volume_image.shape, np.uint8), volume_image, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["mask.nii.gz"]


def test_overlay_png(tmp_path):
    gray = np.full((40, 60), 100, np.uint8)
    first = np.zeros((40, 60), bool)
    first[20:35, 10:25] = True
    second = np.zeros((40, 60), bool)
    second[5:15, 40:55] = True
    path = write_overlay_png(gray, [first, second], [(8, 18, 27, 37), None], ["liver", "tumour"], tmp_path / "o.png")
    overlay = np.asarray(Image.open(path))
    assert overlay.shape == (40, 60, 3) and overlay.dtype == np.uint8
    inside_first, inside_second = overlay[30, 15].astype(int), overlay[12, 50].astype(int)
    expected_first = np.rint(0.55 * 100 + 0.45 * np.array(PALETTE[0]))
    np.testing.assert_array_equal(inside_first, expected_first)  # semi-transparent mask colour
    assert len(set(inside_second.tolist())) > 1 and not np.array_equal(inside_first, inside_second)
    assert overlay[37, 20].tolist() == list(PALETTE[0])  # box outline in the mask's colour
    assert overlay[39, 59].tolist() == [100, 100, 100]  # untouched background
    assert os.listdir(tmp_path) == ["o.png"]


def test_overlay_on_a_colour_image(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    path = write_overlay_png(rgb, [np.ones((10, 12), bool)], [None], [""], tmp_path / "o.png")
    assert np.asarray(Image.open(path))[5, 5].tolist() == np.rint(0.45 * np.array(PALETTE[0])).tolist()


def test_overlay_argument_checks(tmp_path):
    gray = np.zeros((10, 12), np.uint8)
    with pytest.raises(ValueError, match="1 masks, 0 boxes and 1 labels"):
        write_overlay_png(gray, [np.zeros((10, 12))], [], ["a"], tmp_path / "o.png")
    with pytest.raises(ValueError, match=r"mask 0 has shape \(12, 10\), expected \(10, 12\)"):
        write_overlay_png(gray, [np.zeros((12, 10))], [None], ["a"], tmp_path / "o.png")
    with pytest.raises(ValueError, match="uint8 image"):
        write_overlay_png(gray.astype(np.int16), [], [], [], tmp_path / "o.png")
