"""MONAI Label's own Slicer plugin (0.8.5) against this server, driven with MONAI Label's own
Python client the way the plugin drives it, and its segments built with Slicer's own
segmentations logic (the slicer-core wheel) the way the plugin builds them: the segment names it
shows, asking without its developer mode, and corrections it saves that retrain the model.

The ``plugin_*`` helpers copy the plugin's code paths (MONAILabel.py: getParamsFromConfig,
onClickSegmentation, onClickDeepgrow, updateSegmentationMask, onSaveLabel)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import vtk
from monailabel.client import MONAILabelClient
from trame_slicer.core import SlicerApp

from medisee.data.corrections import Correction, correction_records, label_names_of
from medisee.data.demo.ct_phantom import generate_phantom
from medisee.imaging import read_image
from tests.support.mrml import load_labelmap, load_volume, segment_mask
from tests.support.server import monailabel_server, server_on_copy, wait_for_training
from tests.support.studies import SHAPE, SPACING, corrected_label, structure_box


def plugin_params(info: dict, name: str, edited: dict | None = None, section: str = "models") -> dict:
    """getParamsFromConfig: a model's (or trainer's) config as the options table holds it (edited only in developer mode)."""
    config = info[section][name].get("config", {}) | (edited or {})
    return {k: v[0] if isinstance(v, list) else v for k, v in config.items()}


def plugin_segment_names(params: dict, info: dict, model: str) -> list[str]:
    """onClickSegmentation: the names the plugin gives the answer's label values, in value order."""
    labels = params.get("label_names") if params and params.get("label_names") else info["models"][model].get("labels")
    if labels and isinstance(labels, dict):
        labels = [k for k, _ in sorted(labels.items(), key=lambda item: item[1])]
    return [label for label in labels if label != "background"]


def plugin_import(app: SlicerApp, segmentation, label_file: str, names: list[str]) -> None:
    """updateSegmentationMask for a whole volume: the label file into segments whose ids are ``names``."""
    labelmap = load_labelmap(app, Path(label_file))
    ids = vtk.vtkStringArray()
    for name in names:
        ids.InsertNextValue(name)
    assert app.segmentations_logic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids)
    app.scene.RemoveNode(labelmap)


def plugin_save(app: SlicerApp, client: MONAILabelClient, image_id: str, segmentation, volume, folder) -> dict:
    """onSaveLabel: every segment but background/scribbles exported as a labelmap, sent with its label_info."""
    segments = segmentation.GetSegmentation()
    label_info, saved = [], vtk.vtkStringArray()
    for idx in range(segments.GetNumberOfSegments()):
        segment = segments.GetSegment(segments.GetNthSegmentID(idx))
        if segment.GetName() in ["background", "foreground_scribbles", "background_scribbles"]:
            continue
        saved.InsertNextValue(segments.GetNthSegmentID(idx))
        label_info.append({"name": segment.GetName(), "idx": idx + 1})
    labelmap = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert app.segmentations_logic.ExportSegmentsToLabelmapNode(segmentation, saved, labelmap, volume)
    path = folder / f"{image_id}-label.nii.gz"
    assert app.io_manager.write_volume(labelmap, path) is None and path.exists()
    app.scene.RemoveNode(labelmap)
    return client.save_label(image_id, str(path), params={"label_info": label_info})


def corrected_segmentation(app: SlicerApp, volume, seed: int, folder) -> object:
    """A radiologist's segmentation in Slicer: a "background" segment the plugin skips, then liver and right kidney."""
    segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.GetSegmentation().AddEmptySegment("background", "background")
    plugin_import(app, segmentation, str(corrected_label(seed, folder, {1: "liver", 2: "right kidney"})), ["liver", "right kidney"])
    return segmentation


@pytest.fixture(scope="module")
def server(studies_template, tmp_path_factory):
    with server_on_copy(studies_template, tmp_path_factory.mktemp("stock-plugin")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("client")))


def test_the_plugin_finds_a_segmentation_model_with_a_query_option_and_an_interactive_one(client):
    models = client.info()["models"]
    assert models["medisee"]["type"] == "segmentation" and "query" in models["medisee"]["config"]
    assert models["medisee_segment"]["type"] == "deepgrow" and models["medisee_segment"]["dimension"] == 3


def test_in_developer_mode_the_segments_are_named_by_their_structures(client, studies_template):
    info = client.info()
    params = plugin_params(info, "medisee", {"query": "Please segment the left lung and right lung in this image.",
                                             "slice": "6", "mode": "full"})
    label_file, result = client.infer("medisee", "ct-a", params | {"box": structure_box(11, "vertebra", 6), "prompt_slice": 6})
    names = plugin_segment_names(result, info, "medisee")
    assert len(names) >= 2 and names == [e["phrase"] for e in sorted(result["entities"], key=lambda e: e["label"])]
    assert not any(name.isdigit() for name in names)

    app = SlicerApp()
    volume = load_volume(app, studies_template / "studies" / "ct-a.nii.gz")
    segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    plugin_import(app, segmentation, label_file, names)
    labels = read_image(label_file).array
    segments = segmentation.GetSegmentation()
    assert [segments.GetSegment(segments.GetNthSegmentID(i)).GetName() for i in range(segments.GetNumberOfSegments())] == names
    for name in names:
        assert np.array_equal(segment_mask(app, segmentation, name, volume), labels == result["label_names"][name])


def test_without_developer_mode_the_segment_name_is_the_question(client, studies_template):
    info = client.info()
    with pytest.raises(Exception, match="the query is empty"):  # the segmentation model needs the hidden options
        client.infer("medisee", "ct-a", plugin_params(info, "medisee"))
    liver = np.argwhere(generate_phantom(11, shape=SHAPE, spacing=SPACING).masks["liver"][4])
    j, i = liver[len(liver) // 2]
    params = {"label": "liver", "foreground": [[int(i), int(j), 4]], "background": []} | plugin_params(info, "medisee_segment")
    label_file, result = client.infer("medisee_segment", "ct-a", params)
    labels = read_image(label_file).array
    assert result["query"] == "liver" and result["slices"] == [4] and result["label_names"] == {"liver": 1}
    assert set(np.unique(labels)) == {0, 1} and labels[4].any() and not np.delete(labels, 4, axis=0).any()

    app = SlicerApp()  # onClickDeepgrow on a 3D model: the answer's value 1 into the segment it was asked from
    volume = load_volume(app, studies_template / "studies" / "ct-a.nii.gz")
    segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
    plugin_import(app, segmentation, label_file, ["liver"])
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert np.array_equal(segment_mask(app, segmentation, "liver", volume), labels == 1)


def test_a_label_the_plugin_saves_is_kept_with_names_that_become_training_records(client, server, studies_template, tmp_path):
    app = SlicerApp()
    volume = load_volume(app, studies_template / "studies" / "ct-b.nii.gz")
    segmentation = corrected_segmentation(app, volume, 12, tmp_path)
    assert plugin_save(app, client, "ct-b", segmentation, volume, tmp_path)["image"] == "ct-b"
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": "ct-b", "tag": "final"}, timeout=30).json()
    assert info["label_info"] == [{"name": "liver", "idx": 2}, {"name": "right kidney", "idx": 3}]
    names = label_names_of(info)
    assert names == {1: "liver", 2: "right kidney"}
    kept = tmp_path / "kept.nii.gz"
    kept.write_bytes(requests.get(f"{server.url}/datastore/label", params={"label": "ct-b", "tag": "final"}, timeout=30).content)
    truth = generate_phantom(12, shape=SHAPE, spacing=SPACING).masks
    labels = read_image(kept).array
    assert np.array_equal(labels == 2, truth["right kidney"]) and np.array_equal(labels == 1, truth["liver"] & ~truth["right kidney"])
    records = correction_records(Correction(studies_template / "studies" / "ct-b.nii.gz", kept, names), tmp_path / "records")
    assert {r.class_text for r in records if not r.absent} == {"liver", "right kidney"}


@pytest.mark.slow
def test_corrections_saved_by_the_plugin_retrain_the_model(studies_template, tmp_path):
    shutil.copytree(studies_template / "studies", tmp_path / "studies")
    with monailabel_server(tmp_path / "studies", tmp_path / "work", conf={"retrain_steps": "4", "mode": "fast"}) as server:
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
        app = SlicerApp()
        for image_id, seed in (("ct-a", 11), ("ct-b", 12)):
            volume = load_volume(app, tmp_path / "studies" / f"{image_id}.nii.gz")
            plugin_save(app, client, image_id, corrected_segmentation(app, volume, seed, tmp_path), volume, tmp_path)
        info = client.info()
        started = client.train_start("medisee", plugin_params(info, "medisee", section="trainers"))
        assert started["status"] in ("SUBMITTED", "RUNNING"), started
        status = wait_for_training(client)
        assert status["status"] == "DONE", json.dumps(status, indent=1)[-3000:]
        report = requests.get(f"{server.url}/info/", timeout=30).json()["train_stats"]["medisee"]
        assert sorted(report["train_studies"] + report["heldout_studies"]) == ["ct-a", "ct-b"] and report["n_train"] > 0
