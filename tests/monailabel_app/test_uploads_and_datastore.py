"""Uploads in the scratch folder (``lib/uploads.py``), the datastore's start-up sweep of
half-written files and its checked deletes (``lib/datastore.py``), training status without
server internals (``lib/endpoints.py``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi import UploadFile

from monailabel_app.lib.datastore import MediSeeDatastore
from monailabel_app.lib.endpoints import without_internals
from monailabel_app.lib.errors import ClientError
from monailabel_app.lib.uploads import file_suffix, json_object, saved_upload, sweep


def test_an_upload_lives_only_as_long_as_its_block(tmp_path):
    upload = UploadFile(io.BytesIO(b"data"), filename="../../etc/scan.nii.gz")
    with saved_upload(upload, tmp_path) as path:
        assert path.read_bytes() == b"data" and path.name == "upload.nii.gz" and path.parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), saved_upload(UploadFile(io.BytesIO(b"x"), filename="a.dcm"), tmp_path):
        raise RuntimeError("the request failed")
    assert list(tmp_path.iterdir()) == []


def test_only_the_file_type_of_a_clients_name_is_kept():
    assert file_suffix("study.nii.gz") == ".nii.gz" and file_suffix("IM0001.dcm") == ".dcm"
    assert file_suffix("x.$(rm -rf).nii") == ".nii" and file_suffix(None) == ".nii.gz"


def test_what_a_killed_server_left_in_scratch_is_swept(tmp_path):
    (tmp_path / "upload-abc").mkdir()
    (tmp_path / "upload-abc" / "upload.nii.gz").write_bytes(b"x")
    (tmp_path / "labels-1.nii.gz").write_bytes(b"x")
    assert sweep(tmp_path) == 2 and list(tmp_path.iterdir()) == []
    assert sweep(tmp_path / "missing") == 0


def test_params_must_be_a_json_object():
    assert json_object('{"query": "liver"}', "params") == {"query": "liver"} and json_object("", "params") == {}
    for text, message in (("[1]", "JSON object"), ("{x", "not valid JSON"), ("7", "JSON object")):
        with pytest.raises(ClientError, match=message):
            json_object(text, "params")


def test_half_written_datastore_files_are_removed_at_start(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.int16)), str(tmp_path / "ct-a.nii.gz"))
    labels = tmp_path / "labels" / "final"
    labels.mkdir(parents=True)
    leftover = labels / ".ct-a.nii.gz.k3j2h1.tmp"
    leftover.write_bytes(b"")
    MediSeeDatastore(str(tmp_path), extensions=("*.nii.gz",), auto_reload=False)
    assert not leftover.exists() and (tmp_path / "ct-a.nii.gz").exists()


def test_deletes_take_plain_ids_only(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.int16)), str(tmp_path / "ct-a.nii.gz"))
    datastore = MediSeeDatastore(str(tmp_path), extensions=("*.nii.gz",), auto_reload=False)
    for call in (lambda: datastore.remove_image("../../etc"), lambda: datastore.remove_label("ct-a", "../final")):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.status_code == 400
    with pytest.raises(ClientError) as missing:
        datastore.remove_label("ct-a", "final")
    assert missing.value.status_code == 404
    datastore.remove_image("ct-a")
    assert not (tmp_path / "ct-a.nii.gz").exists() and "ct-a" not in datastore.list_images()


def test_training_status_loses_server_paths_and_traceback_lines():
    status = {"status": "ERROR", "details": ["[medisee] retraining /srv/medisee/models/x on 2 studies",
                                             "Traceback (most recent call last):",
                                             '  File "/work/app/lib/trainers/medisee.py", line 57, in __call__',
                                             "ValueError: no 'final' labels"]}
    assert without_internals(status) == {"status": "ERROR", "details": ["[medisee] retraining <path> on 2 studies",
                                                                "ValueError: no 'final' labels"]}
