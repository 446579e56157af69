"""The real MONAI Label server with the MediSee app, over HTTP on loopback."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from monailabel.client import MONAILabelClient
from requests_toolbelt.multipart.decoder import MultipartDecoder

from medisee.imaging import read_image

from tests.support.server import server_on_copy

@pytest.fixture(scope="module")
def server(studies_template, tmp_path_factory):
    with server_on_copy(studies_template, tmp_path_factory.mktemp("server")) as running:
        yield running


def infer(url: str, image: str, params: dict, timeout: float = 120) -> requests.Response:
    return requests.post(f"{url}/infer/medisee", params={"image": image}, data={"params": json.dumps(params)},
                         timeout=timeout)


def decode(response: requests.Response, tmp_path: Path) -> tuple[dict, Path]:
    """The multipart answer: its JSON and its label file."""
    assert response.status_code == 200, response.text
    parts = MultipartDecoder(response.content, response.headers["content-type"]).parts
    result, label = None, tmp_path / "labels.nii.gz"
    for part in parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        if 'name="params"' in disposition:
            result = json.loads(part.content)
        else:
            label.write_bytes(part.content)
    assert result is not None and label.exists()
    return result, label


def test_info_lists_the_medisee_tasks(server):
    info = requests.get(f"{server.url}/info/", timeout=10).json()
    assert info["name"] == "MediSee"
    assert "medisee" in info["models"] and "liver" in info["models"]["medisee"]["labels"]
    assert "medisee" in info["trainers"]
    assert {"medisee_uncertainty", "first", "random"} <= set(info["strategies"])
    served = info["models"]["medisee"]["medisee"]  # what our Slicer panel offers: the window presets, the params
    assert served["windows"]["abdomen"] == [40.0, 400.0] and "language_slices" in served["params"]


def test_inference_on_a_dicom_series_returns_an_aligned_label_volume(server, studies_template, tmp_path):
    series = studies_template / "dicom" / "ct-c"
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    query = "Please segment the liver in this image."  # a phrasing the tiny model was trained on (plumbing, not accuracy)
    label_file, result = client.infer("medisee", str(series), {"query": query, "slice": "all", "mode": "full"})

    original, labels = read_image(series), read_image(label_file)
    assert labels.shape == original.shape
    assert np.allclose(labels.spacing, original.spacing) and np.allclose(labels.origin, original.origin)
    assert np.allclose(labels.direction, original.direction)
    assert result["answer"] and result["query"] == query
    assert result["slices"] == list(range(original.shape[0]))
    names = {value: phrase for phrase, value in result["label_names"].items()}  # MONAI Label: phrase -> value
    assert names, "threshold 0 reports every grounded entity"
    assert set(np.unique(labels.array)) - {0} <= set(names)
    for entity in result["entities"]:
        assert names[entity["label"]] == entity["phrase"]
        for index, found in entity["slices"].items():
            x0, y0, x1, y1 = found["box"]
            assert 0 <= x0 < x1 <= original.shape[2] and 0 <= y0 < y1 <= original.shape[1]
            assert found["pixels"] > 0 and 0 <= found["score"] <= 1
    painted = {int(z) for z in np.nonzero(labels.array)[0]}
    listed = {int(k) for e in result["entities"] for k in e["slices"]}
    assert painted <= listed
    assert result["timing"]["request_s"] > 0


def test_a_box_prompt_belongs_to_its_slice(server, tmp_path):
    params = {"query": "What is inside this box?", "slice": "2-4", "box": [20, 20, 70, 70], "prompt_slice": 3}
    result, _ = decode(infer(server.url, "ct-a", params), tmp_path)
    assert result["slices"] == [2, 3, 4]
    params["prompt_slice"] = 6
    response = infer(server.url, "ct-a", params)
    assert response.status_code == 422 and "slice 6" in response.json()["detail"]


def _corrupt_nifti(folder: Path) -> Path:
    path = folder / "corrupt.nii.gz"
    path.write_bytes(gzip.compress(b"\x5c\x01" + b"\x00" * 60)[:40])
    return path


def _four_d(folder: Path) -> Path:
    path = folder / "four-d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.Image([8, 8, 4], sitk.sitkInt16)] * 3), str(path))
    return path


def _png(folder: Path) -> Path:
    path = folder / "slice.png"
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkUInt8), str(path))
    return path


BAD_INFERENCES = [
    ("unknown image", "no-such-study", {"query": "liver?"}, 404, "unknown image"),
    ("missing query", "ct-a", {}, 422, "no 'query'"),
    ("empty query", "ct-a", {"query": "   "}, 422, "empty"),
    ("huge query", "ct-a", {"query": "why " * 1000}, 413, "limit is 2000"),
    ("box outside", "ct-a", {"query": "liver?", "box": [10, 10, 500, 60]}, 422, "outside the image"),
    ("malformed box", "ct-a", {"query": "liver?", "box": [1, 2, 3]}, 422, "box must be"),
    ("point outside", "ct-a", {"query": "liver?", "point": [-4, 10]}, 422, "outside the image"),
    ("slice out of range", "ct-a", {"query": "liver?", "slice": 8}, 422, "out of range"),
    ("reversed range", "ct-a", {"query": "liver?", "slice": "5-2"}, 422, "reversed"),
    ("unknown axis", "ct-a", {"query": "liver?", "axis": "oblique"}, 422, "unknown axis"),
    ("unknown mode", "ct-a", {"query": "liver?", "mode": "turbo"}, 422, "unknown mode"),
]


@pytest.mark.parametrize("name,image,params,status,message", BAD_INFERENCES, ids=[b[0] for b in BAD_INFERENCES])
def test_bad_inference_requests_get_a_specific_4xx_and_the_server_keeps_serving(server, tmp_path, name, image, params,
                                                                              status, message):
    response = infer(server.url, image, params)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    decode(infer(server.url, "ct-a", {"query": "Where is the liver?"}), tmp_path)


def test_unknown_model_is_a_404(server):
    response = requests.post(f"{server.url}/infer/segmentation_spleen", params={"image": "ct-a"},
                             data={"params": json.dumps({"query": "liver?"})}, timeout=30)
    assert response.status_code == 404 and "unknown model" in response.json()["detail"]


@pytest.mark.parametrize("make,status,message", [
    (_corrupt_nifti, 415, "cannot read image data"), (_four_d, 415, "4D"), (lambda d: d / "notes.txt", 400, "not kept here"),
], ids=["corrupt", "4d", "not-an-image"])
def test_bad_uploads_are_refused(server, tmp_path, make, status, message):
    path = make(tmp_path)
    if not path.exists():
        path.write_text("not an image")
    with open(path, "rb") as handle:
        response = requests.put(f"{server.url}/datastore/image", params={"image": "upload-test"},
                                files={"file": (path.name, handle)}, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert "upload-test" not in requests.get(f"{server.url}/datastore/?output=all", timeout=10).json()["objects"]


def test_an_uploaded_2d_image_is_answered_and_has_no_coronal_slices(server, tmp_path):
    with open(_png(tmp_path), "rb") as handle:
        response = requests.put(f"{server.url}/datastore/image", params={"image": "xray-2d"},
                                files={"file": ("slice.png", handle)}, timeout=30)
    assert response.status_code == 200, response.text
    result, label = decode(infer(server.url, "xray-2d", {"query": "Anything abnormal?"}), tmp_path)
    assert read_image(label).shape == (32, 32) and result["slices"] == [0]
    response = infer(server.url, "xray-2d", {"query": "Anything abnormal?", "axis": "coronal"})
    assert response.status_code == 422 and "2D image" in response.json()["detail"]


def test_a_label_of_the_wrong_shape_is_refused(server, tmp_path):
    wrong = tmp_path / "wrong.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16, 4], sitk.sitkUInt8), str(wrong))
    with open(wrong, "rb") as handle:
        response = requests.put(f"{server.url}/datastore/label", params={"image": "ct-a", "tag": "final"},
                                data={"params": json.dumps({"label_names": {"1": "liver"}})},
                                files={"label": ("wrong.nii.gz", handle)}, timeout=30)
    assert response.status_code == 422 and "differs from the image's" in response.json()["detail"]


def test_concurrent_clients_all_get_their_own_answers(server, tmp_path):
    cases = [("ct-a", 3, "Where is the liver?"), ("ct-b", 4, "Which organ filters blood?"),
             ("ct-a", 5, "Show the spleen."), ("ct-b", 2, "Where is the aorta?")]
    expected = {}
    for image, index, query in cases:
        result, label = decode(infer(server.url, image, {"query": query, "slice": index}), tmp_path)
        expected[(image, index, query)] = (result["label_names"], read_image(label).array)

    def client(number: int) -> list[tuple]:
        answers = []
        for request in range(5):
            image, index, query = cases[(number + request) % len(cases)]
            folder = tmp_path / f"client-{number}-{request}"
            folder.mkdir()
            result, label = decode(infer(server.url, image, {"query": query, "slice": index}, timeout=300), folder)
            answers.append(((image, index, query), result, read_image(label).array))
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client, range(8)) for a in batch]
    assert len(answers) == 40
    for key, result, labels in answers:
        assert result["query"] == key[2] and result["slices"] == [key[1]]
        names, reference = expected[key]
        assert result["label_names"] == names and np.array_equal(labels, reference)


def test_uncertainty_picks_an_unlabelled_study(server):
    response = requests.post(f"{server.url}/activelearning/medisee_uncertainty", json={"query": "Where is the liver?"},
                             timeout=120)
    assert response.status_code == 200, response.text
    chosen = response.json()
    assert chosen["id"] in chosen["scores"] and 0 <= chosen["uncertainty"] <= 1
    assert chosen["uncertainty"] == max(chosen["scores"].values())


@pytest.mark.slow
def test_a_question_naming_two_structures_gives_two_labels(server, tmp_path):
    from tests.support.studies import structure_box

    params = {"query": "Please segment the left lung and right lung in this image.", "slice": "6", "mode": "full",
              "box": structure_box(11, "vertebra", 6), "prompt_slice": 6}
    result, label_file = decode(infer(server.url, "ct-a", params), tmp_path)
    names = {value: phrase for phrase, value in result["label_names"].items()}  # MONAI Label: phrase -> value
    assert len(names) >= 2 and len(set(names.values())) == len(names)
    assert {e["phrase"] for e in result["entities"]} == set(names.values())
    labels = read_image(label_file).array
    assert set(np.unique(labels[6])) - {0} <= set(names) and len(np.unique(labels[6])) >= 3
    for entity in result["entities"]:
        assert set(entity["slices"]) == {"6"} and entity["slices"]["6"]["pixels"] > 0
