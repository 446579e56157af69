"""MONAI Label's own DICOMweb datastore against a real Orthanc holding the sample study's CT series: the path
a hospital takes (``--studies http://pacs:8042/dicom-web``) must hand the model the same voxels and geometry."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medisee.data.demo.sample_study import SampleStudy, build_sample_study
from medisee.imaging import MedicalImage, read_image
from tests.support import orthanc
from tests.support.orthanc import orthanc_server, require_orthanc, with_interpreter_bin


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> SampleStudy:
    return build_sample_study(tmp_path_factory.mktemp("sample"), seed=3, slices=12)


def dicomweb_datastore(url: str, cache: Path):
    """The datastore as ``MONAILabelApp._init_dicomweb_datastore`` builds it (same client and settings),
    except that its cache lives in ``cache`` instead of ``~/.cache/monailabel/dicom``."""
    from monailabel.config import settings
    from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore

    client = DICOMwebClientX(url=url, session=None, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                             wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                             stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
    return DICOMWebDatastore(client=client, search_filter=settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
                             cache_path=str(cache), fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
                             convert_to_nifti=settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI)


def assert_same_image(actual: MedicalImage, expected: MedicalImage) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.array, expected.array)
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(actual, key), getattr(expected, key), atol=1e-4, err_msg=key)


def test_dicomweb_datastore_lists_and_fetches_the_sample_series_from_orthanc(sample, tmp_path, monkeypatch):
    require_orthanc()
    monkeypatch.setenv("PATH", with_interpreter_bin()["PATH"])  # dcmqi from this environment, never downloaded
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # MONAI Label leaves its NIfTI conversions there
    assert shutil.which("itkimage2segimage"), "dcmqi's itkimage2segimage should come with this environment"
    files = sorted(sample.ct_dicom.glob("*.dcm"))
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    original = read_image(sample.ct_dicom)
    assert_same_image(original, read_image(sample.ct_nifti))

    with orthanc_server(tmp_path / "orthanc") as pacs:
        assert len(pacs.store(files)) == 1
        datastore = dicomweb_datastore(pacs.dicomweb_url, tmp_path / "cache")
        try:
            assert datastore.list_images() == [series_uid]  # a DICOMweb image id is the SeriesInstanceUID
            fetched = Path(datastore.get_image_uri(series_uid))  # the first call answers with the conversion's temp file
            cached = Path(datastore.get_image_uri(series_uid))  # later calls with the datastore's copy of it
            assert cached.name == f"{series_uid}.nii.gz" and (tmp_path / "cache") in cached.parents
            for uri in (fetched, cached):  # what an infer task is given
                assert_same_image(read_image(uri), original)
            series = cached.parent / series_uid  # the retrieved instances, cached beside the NIfTI
            assert len(list(series.glob("*.dcm"))) == len(files)
            assert_same_image(read_image(series), original)
        finally:
            datastore._observer.stop()  # LocalDatastore's file watcher (auto_reload) has no public stop
            datastore._observer.join(5)


def test_missing_orthanc_fails_with_the_setup_hint_unless_skipping_is_asked_for(monkeypatch):
    monkeypatch.setattr(orthanc, "DICOMWEB_PLUGIN", Path("/nonexistent/libOrthancDicomWeb.so"))
    monkeypatch.delenv(orthanc.SKIP_VARIABLE, raising=False)
    with pytest.raises(pytest.fail.Exception, match="scripts/setup.sh"):
        require_orthanc()
    monkeypatch.setenv(orthanc.SKIP_VARIABLE, "1")
    with pytest.raises(pytest.skip.Exception, match="MEDISEE_SKIP_ORTHANC=1"):
        require_orthanc()


def test_an_orthanc_that_does_not_start_is_reported_with_its_log(tmp_path, monkeypatch):
    require_orthanc()
    monkeypatch.setattr(orthanc, "DICOMWEB_PLUGIN", tmp_path / "not-a-plugin.so")
    (tmp_path / "not-a-plugin.so").write_text("not a shared library")
    with pytest.raises(RuntimeError, match=r"Orthanc exited .* see its log .*orthanc-\d+\.log"):
        with orthanc_server(tmp_path / "orthanc"):
            pass
