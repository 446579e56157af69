"""The server as an attacker or a careless client meets it: every request from issue 19's
list, replayed against a real server started as ``scripts/run.sh`` starts it, gets a
specific answer without a server path or a traceback, and the server keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from tests.support.server import monailabel_server
from tests.support.studies import corrected_label


@pytest.fixture(scope="module")
def guarded(studies_template, tmp_path_factory):
    """A server over a copy of the studies, with its own system temp folder (to see leaks)
    and a 2 MiB upload limit."""
    work = tmp_path_factory.mktemp("guarded")
    system_temp = work / "system-temp"
    system_temp.mkdir()
    (work / "studies").mkdir()
    for study in (studies_template / "studies").glob("*.nii.gz"):
        (work / "studies" / study.name).write_bytes(study.read_bytes())
    conf = {"threshold": "0.0", "mode": "fast", "max_upload_mb": "2"}
    with monailabel_server(work / "studies", work, conf=conf, env={"TMPDIR": str(system_temp)}) as server:
        server.work, server.system_temp = work, system_temp
        yield server


def clean(response: requests.Response, *secrets: Path) -> dict:
    """The JSON answer, checked to hold no traceback and no server path."""
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text
    for secret in (*secrets, Path(sys.prefix), Path(__file__).resolve().parents[2]):
        assert str(secret) not in text, f"{secret} leaked: {text}"
    return response.json()


def still_serving(server) -> None:
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200


def infer(server, params, image: str = "ct-a", **extra) -> requests.Response:
    return requests.post(f"{server.url}/infer/medisee", params={"image": image, "output": "json", **extra},
                         data={"params": params if isinstance(params, str) else json.dumps(params)}, timeout=120)


def upload(server, path: Path, image: str, **params) -> requests.Response:
    with open(path, "rb") as handle:
        return requests.put(f"{server.url}/datastore/image", params={"image": image, **params},
                            files={"file": (path.name, handle)}, timeout=60)


def write_volume(path: Path, shape=(4, 32, 32)) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.int16)), str(path))
    return path


# -- endpoints the product does not use are off ------------------------------------------------------------------
OFF = [
    ("PUT", "/session/?uncompress=true", "sessions"),  # tar entries with ../ wrote outside the sessions folder
    ("GET", "/session/some-session?image=true", "sessions"),  # a planted meta.info served any file
    ("GET", "/logs/", "logs"),
    ("GET", "/datastore/dataset", "dataset"),
    ("DELETE", "/datastore/image?id=ct-b", "deletes"),
    ("DELETE", "/datastore/label?id=ct-b&tag=final", "deletes"),
    ("PUT", "/datastore/label/info?label=ct-a&tag=final", "info_edits"),
    ("GET", "/model/medisee", "models"),
    ("POST", "/batch/infer/medisee", "extras"),
]


@pytest.mark.parametrize("method,path,group", OFF, ids=[f"{m} {p.split('?')[0]}" for m, p, _ in OFF])
def test_endpoints_the_product_does_not_use_are_off(guarded, method, path, group):
    response = requests.request(method, guarded.url + path, timeout=30)
    assert response.status_code == 403, response.text
    assert f"--conf enable {group}" in clean(response)["detail"]


def test_infer_cannot_reach_a_session_folder(guarded, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    traversal = "../" * 12 + str(victim).lstrip("/")
    response = infer(guarded, {"query": "liver?"}, session_id=traversal)
    assert response.status_code == 403 and "sessions" in clean(response)["detail"]
    assert victim.is_dir()


def test_image_ids_are_confined_to_the_datastore_and_say_nothing_about_other_files(guarded, tmp_path):
    outside = write_volume(tmp_path / "outside.nii.gz")
    answers = [infer(guarded, {"query": "liver?"}, image=str(path))
               for path in (outside, tmp_path / "missing.nii.gz", Path("/etc/shadow"), "../../../../etc/passwd")]
    assert [a.status_code for a in answers] == [404] * 4
    details = [clean(a)["detail"] for a in answers]
    assert all("it is not in the datastore" in d for d in details)


def test_a_study_is_overwritten_only_when_asked_and_then_loses_its_old_labels(guarded, tmp_path):
    first = write_volume(tmp_path / "first.nii.gz", (8, 96, 96))
    assert upload(guarded, first, "replace-me").status_code == 200
    label = corrected_label(0, tmp_path, {1: "liver"})
    with open(label, "rb") as handle:
        saved = requests.put(f"{guarded.url}/datastore/label", params={"image": "replace-me", "tag": "final"},
                             data={"params": json.dumps({"label_names": {"1": "liver"}})},
                             files={"label": (label.name, handle)}, timeout=60)
    assert saved.status_code == 200, saved.text
    other = write_volume(tmp_path / "other.nii.gz", (6, 64, 64))
    refused = upload(guarded, other, "replace-me")
    assert refused.status_code == 409 and "overwrite=true" in clean(refused)["detail"]
    replaced = upload(guarded, other, "replace-me", overwrite="true")
    assert replaced.status_code == 200, replaced.text
    record = requests.get(f"{guarded.url}/datastore/?output=all", timeout=30).json()["objects"]["replace-me"]
    assert record["labels"] == {} and record["image"]["info"]["shape"] == [6, 64, 64]
    assert requests.get(f"{guarded.url}/datastore/label", params={"label": "replace-me", "tag": "final"},
                        timeout=30).status_code == 404


def test_training_cannot_run_inside_the_server_or_with_bad_parameters(guarded):
    url = f"{guarded.url}/train/medisee"
    synchronous = requests.post(url, params={"run_sync": "true"}, json={}, timeout=30)
    assert synchronous.status_code == 400 and "run_sync" in clean(synchronous)["detail"]
    for params, message in (({"label_tag": ["final"]}, "label_tag"), ({"steps": 10**9}, "steps"),
                            ({"steps": "many"}, "steps")):
        response = requests.post(url, json=params, timeout=30)
        assert response.status_code in (400, 422) and message in clean(response)["detail"]
    unknown = requests.post(f"{guarded.url}/train/segmentation", json={}, timeout=30)
    assert unknown.status_code == 404


def test_auth_status_answers_when_auth_is_off(guarded):
    assert clean(requests.get(f"{guarded.url}/auth/", timeout=30)) == {"enabled": False, "client_id": None,
                                                                      "realm": None}


def test_web_pages_of_other_sites_are_turned_away(guarded):
    response = requests.get(f"{guarded.url}/info/", headers={"Origin": "http://evil.example"}, timeout=30)
    assert response.status_code == 403
    same = requests.get(f"{guarded.url}/info/", headers={"Origin": guarded.url}, timeout=30)
    assert same.status_code == 200


# -- malformed requests: a specific 4xx, never a 500 --------------------------------------------------------------
MALFORMED = [
    ("params a list", "[1, 2]", 422, "JSON object"),
    ("params not JSON", "{query", 422, "not valid JSON"),
    ("window unknown", {"query": "liver?", "window": "disco"}, 422, "unknown window"),
    ("window NaN", '{"query": "liver?", "window": [NaN, NaN]}', 422, "finite"),
    ("numeric query", {"query": 42}, 422, "must be text"),
]


@pytest.mark.parametrize("name,params,status,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_inference_requests_get_a_specific_4xx(guarded, name, params, status, message):
    response = infer(guarded, params)
    assert response.status_code == status, response.text
    assert message in clean(response)["detail"]
    still_serving(guarded)


def test_a_request_without_image_or_file_is_a_400(guarded):
    response = requests.post(f"{guarded.url}/infer/medisee", data={"params": "{}"}, timeout=30)
    assert response.status_code == 400 and "name an image" in clean(response)["detail"]


def test_upload_params_must_be_a_json_object(guarded, tmp_path):
    with open(write_volume(tmp_path / "p.nii.gz"), "rb") as handle:
        response = requests.put(f"{guarded.url}/datastore/image", params={"image": "params-list"},
                                data={"params": "[1]"}, files={"file": ("p.nii.gz", handle)}, timeout=30)
    assert response.status_code == 422 and "JSON object" in clean(response)["detail"]


def test_active_learning_refuses_huge_and_unknown_requests(guarded):
    url = f"{guarded.url}/activelearning"
    huge = requests.post(f"{url}/medisee_uncertainty", json={"query": "why " * 25_000}, timeout=30)
    assert huge.status_code == 413 and "KiB" in clean(huge)["detail"]
    unknown = requests.post(f"{url}/no_such_strategy", json={}, timeout=30)
    assert unknown.status_code == 404 and "medisee_uncertainty" in clean(unknown)["detail"]
    wrong = requests.post(f"{url}/medisee_uncertainty", json={"query": 7}, timeout=30)
    assert wrong.status_code == 422


def test_a_one_voxel_image_is_refused_and_active_learning_keeps_working(guarded, tmp_path):
    tiny = write_volume(tmp_path / "one.nii.gz", (1, 1, 1))
    response = upload(guarded, tiny, "one-voxel")
    assert response.status_code == 422 and "at least 8 pixels" in clean(response)["detail"]
    chosen = requests.post(f"{guarded.url}/activelearning/medisee_uncertainty", json={}, timeout=300)
    assert chosen.status_code == 200, chosen.text


def test_upload_errors_name_the_clients_file_not_the_servers(guarded, tmp_path):
    corrupt = tmp_path / "scan.nii.gz"
    corrupt.write_bytes(b"not an image" * 50)
    with open(corrupt, "rb") as handle:
        response = requests.post(f"{guarded.url}/infer/medisee", data={"params": json.dumps({"query": "liver?"})},
                                 files={"file": ("scan.nii.gz", handle)}, timeout=30)
    assert response.status_code == 415
    assert "scan.nii.gz" in clean(response, guarded.work, guarded.system_temp)["detail"]


# -- uploads: a size limit, and nothing left behind ---------------------------------------------------------------
def test_uploads_over_the_limit_are_refused_before_they_fill_the_disk(guarded, tmp_path):
    big = tmp_path / "big.nii.gz"
    big.write_bytes(os.urandom(3 << 20))
    response = upload(guarded, big, "too-big")
    assert response.status_code == 413 and "2 MiB" in clean(response)["detail"]

    body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.nii.gz"\r\n\r\n'
            + big.read_bytes() + b"\r\n--x--\r\n")
    chunks = (body[i:i + (1 << 16)] for i in range(0, len(body), 1 << 16))  # no Content-Length: sent chunked
    streamed = requests.put(f"{guarded.url}/datastore/image", params={"image": "too-big"}, data=chunks,
                            headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=60)
    assert streamed.status_code == 413
    still_serving(guarded)


def test_refused_uploads_leave_no_temporary_files(guarded, tmp_path):
    corrupt = tmp_path / "bad.nii.gz"
    corrupt.write_bytes(b"junk" * 1000)
    for _ in range(3):
        assert upload(guarded, corrupt, "bad-upload").status_code == 415
        with open(corrupt, "rb") as handle:
            requests.post(f"{guarded.url}/infer/medisee", data={"params": "{}"}, files={"file": ("bad.nii.gz", handle)},
                          timeout=30)
    assert list(guarded.system_temp.iterdir()) == []
    assert list((guarded.work / "models" / "scratch").iterdir()) == []


# -- the launcher -------------------------------------------------------------------------------------------------
def test_the_launcher_refuses_to_listen_beyond_loopback_without_authentication(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MONAI_LABEL_AUTH_ENABLE"}
    finished = subprocess.run([sys.executable, "-m", "monailabel_app.serve", "--studies", str(tmp_path), "--host",
                               "0.0.0.0", "--port", "8999"], capture_output=True, text=True, timeout=120, env=env)
    assert finished.returncode == 2 and "without authentication" in finished.stderr
