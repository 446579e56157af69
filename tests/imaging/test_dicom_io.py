"""write_dicom_series and DICOM series reading, which must round-trip exactly."""

import logging

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medisee.imaging import read_image, write_dicom_series

SPACING, ORIGIN = (0.7, 0.8, 2.5), (10.5, -20.25, 30.125)
_c, _s = np.cos(np.radians(30)), np.sin(np.radians(30))
OBLIQUE = (_c, -_s, 0.0, _s, _c, 0.0, 0.0, 0.0, 1.0)  # 30 degrees about S-I


@pytest.mark.parametrize("direction", ["identity", "sagittal", "oblique"])
def test_series_round_trip(tmp_path, ct_volume, sagittal_direction, direction):
    matrix = {"identity": tuple(np.eye(3).ravel()), "sagittal": sagittal_direction, "oblique": OBLIQUE}[direction]
    write_dicom_series(ct_volume, tmp_path / "s", SPACING, ORIGIN, matrix)
    image = read_image(tmp_path / "s")
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, ct_volume)
    assert image.spacing == pytest.approx(SPACING, abs=1e-4)
    assert image.origin == pytest.approx(ORIGIN, abs=1e-4)
    assert image.direction == pytest.approx(matrix, abs=1e-4)
    assert (image.modality, image.source_format) == ("CT", "dicom-series")


def test_written_files_are_a_valid_ct_series(tmp_path, ct_volume, sagittal_direction):
    paths = write_dicom_series(
        ct_volume, tmp_path / "s", SPACING, ORIGIN, sagittal_direction,
        patient_id="P1", study_description="study", series_description="series",
    )  # fmt: skip
    assert len(paths) == 5
    slices = [pydicom.dcmread(p) for p in paths]
    first = slices[0]
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.SOPClassUID == first.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert (first.PatientID, first.StudyDescription, first.SeriesDescription) == ("P1", "study", "series")
    assert [float(v) for v in first.PixelSpacing] == [0.8, 0.7]  # rows (y) first
    assert [float(v) for v in first.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    assert (first.RescaleIntercept, first.RescaleSlope, first.SliceThickness) == (-1024, 1, 2.5)
    for k, ds in enumerate(slices):
        assert ds.InstanceNumber == k + 1
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([10.5 - 2.5 * k, -20.25, 30.125])
        np.testing.assert_array_equal(ds.pixel_array * ds.RescaleSlope + ds.RescaleIntercept, ct_volume[k])
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[key].value for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == 5


def test_one_file_of_a_series_is_read_alone(tmp_path, ct_volume):
    paths = write_dicom_series(ct_volume, tmp_path / "s", SPACING, ORIGIN)
    image = read_image(paths[2])
    assert image.array.shape == (1, 6, 7)
    np.testing.assert_array_equal(image.array[0], ct_volume[2])
    assert image.origin == pytest.approx((10.5, -20.25, 30.125 + 2 * 2.5))
    assert image.source_format == "dicom-file"


def test_folder_with_several_series_reads_the_largest(tmp_path, ct_volume, caplog):
    write_dicom_series(ct_volume[:2], tmp_path / "small", SPACING, ORIGIN)
    write_dicom_series(ct_volume, tmp_path / "large", SPACING, ORIGIN)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in [*(tmp_path / "small").iterdir(), *(tmp_path / "large").iterdir()]:
        path.rename(mixed / f"{path.parent.name}_{path.name}")
    with caplog.at_level(logging.WARNING, logger="medisee.imaging"):
        image = read_image(mixed)
    np.testing.assert_array_equal(image.array, ct_volume)
    large_uid = pydicom.dcmread(next(mixed.glob("large_*"))).SeriesInstanceUID
    small_uid = pydicom.dcmread(next(mixed.glob("small_*"))).SeriesInstanceUID
    assert f"reading {large_uid} (5 files)" in caplog.text
    assert f"ignoring {small_uid} (2 files)" in caplog.text


def test_rescaled_hu_survive_non_integer_input(tmp_path):
    volume = np.full((2, 3, 4), 40.4)
    volume[0, 0, 0] = -1024.6
    write_dicom_series(volume, tmp_path / "s")
    np.testing.assert_array_equal(read_image(tmp_path / "s").array, np.rint(volume))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"direction": (1, 0, 0, 0, 1, 0, 0, 0, -1)}, "not a right-handed rotation"),
        ({"direction": (2, 0, 0, 0, 1, 0, 0, 0, 1)}, "not a right-handed rotation"),
        ({"spacing": (1, 0, 1)}, "spacing must be three positive numbers"),
        ({"modality": "US"}, "modality must be one of CT, MR"),
    ],
)
def test_write_dicom_series_rejects_bad_geometry(tmp_path, ct_volume, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_dicom_series(ct_volume, tmp_path / "s", **kwargs)


def test_write_dicom_series_rejects_out_of_range_values(tmp_path):
    with pytest.raises(ValueError, match=r"values must lie in \[-33792, 31743\]"):
        write_dicom_series(np.full((1, 2, 2), 40000), tmp_path / "s")


def test_write_dicom_series_refuses_a_non_empty_folder(tmp_path, ct_volume):
    write_dicom_series(ct_volume, tmp_path / "s")
    with pytest.raises(FileExistsError, match="is not empty"):
        write_dicom_series(ct_volume, tmp_path / "s")
