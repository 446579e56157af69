import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file

from medisee.imaging import ImageReadError, read_image


def _write_sitk(array, path, spacing, origin, direction, is_vector=False) -> Path:
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path


# --- DICOM files -------------------------------------------------------------


def test_ct_small_single_file_keeps_position_and_applies_rescale():
    image = read_image(get_testdata_file("CT_small.dcm"))
    assert image.array.shape == (1, 128, 128)
    assert image.array.dtype == np.int16
    assert image.spacing[:2] == pytest.approx((0.661468, 0.661468))
    assert image.origin == pytest.approx((-158.135803, -179.035797, -75.699997))
    assert image.direction == pytest.approx(np.eye(3).ravel())
    # Stored values are 128..2191; RescaleIntercept -1024 makes them HU.
    assert -1024 <= image.array.min() < -800 and 1000 < image.array.max() < 1500
    assert (image.modality, image.source_format) == ("CT", "dicom-file")
    assert image.ndim == 3 and image.num_slices("axial") == 1


def test_mr_small_modality():
    image = read_image(get_testdata_file("MR_small.dcm"))
    assert image.array.shape == (1, 64, 64)
    assert image.modality == "MR"
    assert image.spacing[:2] == pytest.approx((0.3125, 0.3125))


def test_multi_frame_file_is_a_volume():
    image = read_image(get_testdata_file("rtdose.dcm"))  # 15 frames of 10x10
    assert image.array.shape == (15, 10, 10)
    assert image.spacing == pytest.approx((10.0, 10.0, 5.0))
    assert image.origin == pytest.approx((189.43125, 199.43125, -761.87))


def test_pydicom_fallback_when_gdcm_cannot_read():
    path = get_testdata_file("rtdose_1frame.dcm")  # GDCM rejects it, pydicom decodes it
    image = read_image(path)
    ds = pydicom.dcmread(path)
    assert image.array.shape == (1, 10, 10)
    np.testing.assert_array_equal(image.array[0], ds.pixel_array)
    assert image.origin == pytest.approx((189.43125, 199.43125, -761.87))
    assert image.spacing[:2] == pytest.approx((10.0, 10.0))
    assert image.source_format == "dicom-file"


def test_rgb_dicom_is_a_2d_colour_image():
    image = read_image(get_testdata_file("SC_rgb_small_odd.dcm"))
    assert image.array.shape == (3, 3, 3) and image.array.dtype == np.uint8
    assert image.ndim == 2 and image.is_rgb


def test_dicom_without_extension_is_recognised(tmp_path):
    path = tmp_path / "IMG0001"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    image = read_image(path)
    assert image.array.shape == (1, 128, 128) and image.modality == "CT"


# --- NIfTI, NRRD, MetaImage --------------------------------------------------


@pytest.mark.parametrize(
    "name, fmt", [("v.nii.gz", "nifti"), ("v.nii", "nifti"), ("v.nrrd", "nrrd"), ("v.mha", "metaimage")]
)
def test_sitk_formats_keep_geometry(tmp_path, ct_volume, sagittal_direction, name, fmt):
    path = _write_sitk(ct_volume, tmp_path / name, (0.7, 0.8, 2.5), (10.5, -20.25, 30.125), sagittal_direction)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, ct_volume)
    # NIfTI stores geometry as float32, hence the tolerance.
    assert image.spacing == pytest.approx((0.7, 0.8, 2.5), abs=1e-5)
    assert image.origin == pytest.approx((10.5, -20.25, 30.125), abs=1e-5)
    assert image.direction == pytest.approx(sagittal_direction, abs=1e-5)
    assert (image.source_format, image.modality, image.source) == (fmt, None, str(path))


def test_2d_nifti(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(20, dtype=np.float32).reshape(5, 4), np.eye(4)), path)
    image = read_image(path)
    assert image.ndim == 2 and image.array.shape == (4, 5)  # nibabel (i, j) -> SimpleITK (y, x) = (j, i)


# --- PNG and JPEG ------------------------------------------------------------


def _check_2d_defaults(image):
    assert image.spacing == (1.0, 1.0) and image.origin == (0.0, 0.0)
    assert image.direction == (1.0, 0.0, 0.0, 1.0) and image.modality is None


def test_png_grayscale(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(gray).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(image.array, gray)
    assert image.source_format == "png" and not image.is_rgb
    _check_2d_defaults(image)


def test_png_16_bit_keeps_values(tmp_path):
    values = np.array([[0, 1000], [65535, 7]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, values)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_png_colour_becomes_rgb(tmp_path, mode):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1:3, 2:4] = (255, 0, 0)
    Image.fromarray(rgb).convert(mode).save(tmp_path / "c.png")
    image = read_image(tmp_path / "c.png")
    assert image.array.shape == (4, 5, 3) and image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, rgb)
    assert image.is_rgb and image.ndim == 2
    _check_2d_defaults(image)


@pytest.mark.parametrize("mode, colour", [("RGB", (200, 100, 50)), ("L", 128)])
def test_jpeg(tmp_path, mode, colour):
    expected = Image.new(mode, (9, 8), colour)
    expected.save(tmp_path / "p.jpg")
    image = read_image(tmp_path / "p.jpg")
    assert image.array.shape == np.asarray(expected).shape and image.source_format == "jpeg"
    assert np.abs(image.array.astype(int) - np.asarray(expected)).max() <= 2  # lossy


# --- errors ------------------------------------------------------------------


def _error(path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_error_is_a_value_error():
    assert issubclass(ImageReadError, ValueError)


def test_missing_path(tmp_path):
    assert _error(tmp_path / "nope.nii.gz") == f"{tmp_path / 'nope.nii.gz'}: no such file or directory"


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert _error(tmp_path) == f"no DICOM series found in {tmp_path}"


@pytest.mark.parametrize("name", ["notes.txt", "blob"])
def test_unsupported_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(500))
    assert _error(path) == f"{path}: not a DICOM, NIfTI, NRRD, PNG or JPEG file"


def _truncated(src: Path) -> Path:
    data = src.read_bytes()
    cut = src.with_name("cut_" + src.name)
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _noise_volume(path: Path) -> Path:
    big = np.random.default_rng(0).integers(-1000, 1000, (20, 20, 20)).astype(np.int16)
    return _write_sitk(big, path, (1, 1, 1), (0, 0, 0), np.eye(3).ravel())


def _noise_png(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    return path


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    return path


CORRUPT_CASES = {
    "pydicom MR_truncated.dcm": lambda tmp: Path(get_testdata_file("MR_truncated.dcm")),
    "random bytes .dcm": lambda tmp: _random_bytes(tmp / "x.dcm"),
    "random bytes .png": lambda tmp: _random_bytes(tmp / "x.png"),
    "truncated .nii.gz": lambda tmp: _truncated(_noise_volume(tmp / "v.nii.gz")),
    "truncated .nii": lambda tmp: _truncated(_noise_volume(tmp / "v.nii")),
    "truncated .nrrd": lambda tmp: _truncated(_noise_volume(tmp / "v.nrrd")),
    "truncated .png": lambda tmp: _truncated(_noise_png(tmp / "n.png")),
}


@pytest.mark.parametrize("case", CORRUPT_CASES)
def test_corrupt_or_truncated_files(tmp_path, case):
    path = CORRUPT_CASES[case](tmp_path)
    assert _error(path) == f"{path}: cannot read image data (file is corrupt or truncated)"


def test_dicom_without_pixel_data():
    path = get_testdata_file("rtplan.dcm")
    assert _error(path) == f"{path}: DICOM file holds no image (no pixel data)"


def test_4d_volume(tmp_path):
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3, 2), np.float32), np.eye(4)), path)
    assert _error(path) == (
        f"{path}: unsupported image dimensions (4D, size 5x4x3x2): expected a 2D image or a 3D volume"
    )


def test_vector_volume(tmp_path):
    vectors = np.zeros((3, 4, 5, 3), np.float32)
    path = _write_sitk(vectors, tmp_path / "vec.nrrd", (1, 1, 1), (0, 0, 0), np.eye(3).ravel(), is_vector=True)
    assert "unsupported image dimensions (3D with 3 components per pixel, size 5x4x3)" in _error(path)


def test_multi_frame_colour_dicom_is_unsupported():
    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    assert "unsupported image dimensions (3D with 3 components per pixel" in _error(path)


def test_empty_image(tmp_path):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.float32), np.eye(4)), path)
    assert _error(path) == f"{path}: empty image (size 0x4x4)"
