"""MediSeeLib against the real MONAI Label server with the MediSee app: ask, see (segments, ROIs), submit."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk
from MediSeeLib.client import MediSeeClient
from MediSeeLib.errors import EmptyQuery, ServerRejected
from MediSeeLib.labels import read_label_bytes
from MediSeeLib.results import roi_specs
from MediSeeLib.scope import Scope, box_prompt, request_params
from MediSeeLib.workflow import ask, fetch_next, submit_label

from tests.support.server import server_on_copy

@pytest.fixture(scope="module")
def server(slicer_studies, tmp_path_factory):
    with server_on_copy(slicer_studies, tmp_path_factory.mktemp("slicer-server")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> MediSeeClient:
    return MediSeeClient(server.url, infer_timeout=120)


@pytest.fixture(scope="module")
def series_answer(client, slicer_studies):
    series = slicer_studies / "dicom" / "ct-c"
    return series, ask(client, str(series), request_params("Where is the liver?", Scope("all")))


def read_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_connect_finds_the_medisee_model(client):
    info = client.connect()
    model = info["models"]["medisee"]
    assert info["name"] == "MediSee" and "liver" in model["labels"] and "query" in model["medisee"]["params"]


def test_a_dicom_series_answer_gives_segments_aligned_with_the_series(series_answer):
    series, result = series_answer
    image = read_series(series)
    shape = sitk.GetArrayViewFromImage(image).shape
    assert result.geometry.shape == shape and result.labels.shape == shape
    assert result.slices == list(range(shape[0])) and isinstance(result.answer, str)  # fast mode: masks only
    assert result.segments, "threshold 0 reports every grounded entity"
    for segment in result.segments:
        assert segment.mask.shape == shape and segment.mask.dtype == bool
        assert segment.name and 0 <= segment.score <= 1 and len(segment.color) == 3
        assert np.array_equal(segment.mask, result.labels == segment.label)
    assert len({s.color for s in result.segments}) == len(result.segments)
    # IJK -> RAS: SimpleITK's index -> LPS, with x and y negated
    for ijk in [(0, 0, 0), (95, 0, 0), (0, 95, 7), (13.5, 40.25, 3)]:
        lps = np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))
        assert np.allclose(result.geometry.to_ras(np.array(ijk)), lps * [-1, -1, 1], atol=1e-4)
    ijk_to_ras = result.geometry.ijk_to_ras()
    assert np.allclose(ijk_to_ras[:3, 3], np.array(image.GetOrigin()) * [-1, -1, 1])
    attributes = result.attributes()
    assert attributes["MediSee.Answer"] == result.answer and attributes["MediSee.Query"] == "Where is the liver?"


def test_boxes_become_rois_in_ras(series_answer):
    series, result = series_answer
    image = read_series(series)
    per_slice = roi_specs(result, per_slice=True)
    entity = result.response.entities[0]
    assert len([r for r in per_slice if r.label == entity.label]) == len(entity.slices)
    index, found = next(iter(entity.slices.items()))
    roi = next(r for r in per_slice if r.label == entity.label and r.slice == int(index))
    x0, y0, x1, y1 = found.box  # axial: x = column (i), y = row (j); pixel edges
    expected = [np.array(image.TransformContinuousIndexToPhysicalPoint([x - 0.5, y - 0.5, int(index) + dz]))
                * [-1, -1, 1] for x in (x0, x1) for y in (y0, y1) for dz in (-0.5, 0.5)]
    corners = roi.corners()
    for point in expected:
        assert np.min(np.linalg.norm(corners - point, axis=1)) < 1e-3
    assert box_prompt(result.geometry, "axial", corners) == pytest.approx([x0, y0, x1, y1], abs=0.02)

    whole = next(r for r in roi_specs(result, per_slice=False) if r.label == entity.label)
    assert whole.slice is None
    low, high = whole.corners().min(axis=0), whole.corners().max(axis=0)
    for part in (r for r in per_slice if r.label == entity.label):
        assert np.all(part.corners().min(axis=0) >= low - 1e-6) and np.all(part.corners().max(axis=0) <= high + 1e-6)


def test_a_coronal_slice_range_is_answered_along_that_axis(client):
    result = ask(client, "ct-a", request_params("Show the spleen.", Scope("range", "coronal", 40, 42)))
    assert result.axis == "coronal" and result.slices == [40, 41, 42]
    painted = set(np.nonzero(result.labels)[1].tolist())  # coronal = numpy axis 1 for this axial CT
    assert painted <= {40, 41, 42}
    for roi in roi_specs(result, per_slice=True):
        assert roi.size[1] == pytest.approx(result.geometry.spacing[1])  # one voxel thick along j


def test_an_uploaded_volume_is_answered_by_its_id(client, slicer_studies, tmp_path):
    client.upload_image(slicer_studies / "studies" / "ct-b.nii.gz", "slicer-volume-1")
    result = ask(client, "slicer-volume-1", request_params("Where is the aorta?", Scope("slice", first=3)))
    assert result.slices == [3] and result.labels.shape == (8, 96, 96)


def test_a_submitted_label_round_trips_through_the_datastore(client):
    result = ask(client, "ct-a", request_params("Which organ makes bile?", Scope("slice", first=4)))
    labels = np.zeros(result.geometry.shape, np.uint8)
    labels[3:6, 30:60, 20:50] = 1
    labels[4, 60:70, 60:80] = 2
    submit_label(client, "ct-a", labels, result.geometry, "Which organ makes bile?", {1: "liver", 2: "right kidney"})
    back, geometry = read_label_bytes(client.download_label("ct-a"))
    assert np.array_equal(back, labels)
    assert np.allclose(geometry.ijk_to_ras(), result.geometry.ijk_to_ras())


def test_next_sample_downloads_a_study(client, tmp_path):
    image_id, path = fetch_next(client, tmp_path, "Where is the liver?")
    assert image_id in {"ct-a", "ct-b", "slicer-volume-1"} and path.exists()
    array, geometry = read_label_bytes(path.read_bytes())
    assert geometry.shape == (8, 96, 96) and array.shape == (8, 96, 96)


@pytest.mark.parametrize("image,params,status,words", [
    ("ct-a", {"query": "liver?", "slice": 8}, 422, "out of range"),
    ("no-such-study", {"query": "liver?"}, 404, "unknown image"),
    ("ct-a", {"query": "liver?", "box": [10, 10, 500, 60]}, 422, "outside the image"),
], ids=["slice", "image", "box"])
def test_a_4xx_becomes_a_message_with_the_servers_detail(client, image, params, status, words):
    with pytest.raises(ServerRejected) as caught:
        client.infer(image, params)
    assert caught.value.status == status and words in caught.value.user_message


def test_an_empty_query_is_refused_before_anything_is_sent(client):
    with pytest.raises(EmptyQuery) as caught:
        client.infer("ct-a", {"query": "  "})
    assert "question is empty" in caught.value.user_message


def test_a_question_naming_two_structures_gives_two_segments_and_rois(client):
    from tests.support.studies import structure_box

    params = request_params("Please segment the left lung and right lung in this image.", Scope("slice", first=6),
                            box=structure_box(11, "vertebra", 6), prompt_slice=6, mode="full")
    result = ask(client, "ct-a", params)
    assert len(result.segments) >= 2 and len({s.name for s in result.segments}) == len(result.segments)
    for segment in result.segments:
        assert segment.slices == [6] and segment.mask[6].any()
    rois = roi_specs(result, per_slice=True)
    assert {r.label for r in rois} == {s.label for s in result.segments}
