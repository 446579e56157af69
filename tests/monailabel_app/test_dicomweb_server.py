"""The whole path a hospital takes: a DICOM series in Orthanc, the server started with
``--studies <orthanc>/dicom-web``, a question answered with a label volume on the series' grid."""

from __future__ import annotations

import numpy as np
import pydicom
import requests
from monailabel.client import MONAILabelClient

from medisee.imaging import read_image
from tests.support.orthanc import orthanc_server, require_orthanc, with_interpreter_bin
from tests.support.server import monailabel_server


def test_inference_on_a_series_stored_in_orthanc(studies_template, tmp_path):
    require_orthanc()
    series = studies_template / "dicom" / "ct-c"
    files = sorted(series.glob("*.dcm"))
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    (tmp_path / "tmp").mkdir()
    env = with_interpreter_bin() | {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    with orthanc_server(tmp_path / "orthanc") as pacs:
        pacs.store(files)
        with monailabel_server(pacs.dicomweb_url, tmp_path / "server", conf={"threshold": "0.0", "mode": "fast"},
                               env=env) as server:
            assert requests.get(f"{server.url}/datastore/", timeout=30).json()["total"] == 1
            client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
            label_file, result = client.infer("medisee", uid, {"query": "Where is the liver?", "slice": "all"})
            missing = requests.post(f"{server.url}/infer/medisee", params={"image": "1.2.3.4.5"},
                                    data={"params": '{"query": "liver?"}'}, timeout=60)
    original, labels = read_image(series), read_image(label_file)
    assert labels.shape == original.shape
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(labels, key), getattr(original, key), atol=1e-4, err_msg=key)
    assert result["label_names"] and result["slices"] == list(range(original.shape[0]))
    assert missing.status_code == 404 and "1.2.3.4.5" in missing.json()["detail"]
