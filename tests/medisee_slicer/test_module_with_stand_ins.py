"""MediSee.py's logic run with stand-ins for slicer, qt and vtk: our own code paths (specs -> node calls,
replacement of a repeated question, the request built from the panel) execute; Slicer's calls are recorded."""

from __future__ import annotations

import importlib
import sys
import types
from unittest import mock

import numpy as np
import pytest
from MediSeeLib.errors import NoVolumeSelected, OutsideVolume
from MediSeeLib.geometry import Geometry
from MediSeeLib.results import InferenceResult, SegmentSpec
from MediSeeLib.terminology import code_for

GEOMETRY = Geometry(shape=(8, 96, 96), spacing=(3.0, 3.0, 25.0), origin=(-120.0, -130.0, 40.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


class Base:
    def __init__(self, *args, **kwargs) -> None:
        pass


@pytest.fixture
def module(monkeypatch):
    """MediSee.py imported with mocks for Slicer's packages (ScriptedLoadableModule bases as plain classes)."""
    slicer = mock.MagicMock(name="slicer")
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (Base,), {}))
    util = mock.MagicMock(name="slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (Base,), {})
    slicer.util = util
    for name, value in {"slicer": slicer, "slicer.ScriptedLoadableModule": scripted, "slicer.util": util,
                        "qt": mock.MagicMock(name="qt"), "vtk": mock.MagicMock(name="vtk")}.items():
        monkeypatch.setitem(sys.modules, name, value)
    monkeypatch.delitem(sys.modules, "MediSee", raising=False)
    return importlib.import_module("MediSee")


def result(query: str = "Where is the liver?") -> InferenceResult:
    labels = np.zeros(GEOMETRY.shape, np.uint8)
    labels[3, 10:20, 30:50] = 1
    raw = {"model": "default", "timing": {"request_s": 1.0}, "entities": [
        {"label": 1, "phrase": "liver", "score": 0.9, "slices": {"3": {"box": [30, 10, 50, 20], "score": 0.9}}}]}
    segment = SegmentSpec(1, "liver", (0.9, 0.3, 0.2), labels == 1, 0.9, [3], code_for("liver"))
    return InferenceResult(query, "Sure, it is the liver.", "axial", [3], GEOMETRY, labels, [segment], raw)


def test_show_makes_one_segment_per_entity_with_terminology_and_attributes(module):
    slicer = sys.modules["slicer"]
    slicer.util.getNodesByClass.return_value = []
    volume = mock.MagicMock(name="volume")
    volume.GetID.return_value = "vtkMRMLScalarVolumeNode1"
    node = module.MediSeeLogic().show(volume, "ct-1", result(), per_slice_rois=True)
    segmentation = slicer.mrmlScene.AddNewNodeByClass.return_value
    assert node is segmentation
    segmentation.GetSegmentation().AddEmptySegment.assert_called_once_with("liver", "liver", [0.9, 0.3, 0.2])
    tag = segmentation.GetSegmentation().GetSegment().SetTag.call_args.args
    assert "SCT^10200004^Liver" in tag[1]
    mask = slicer.util.updateSegmentBinaryLabelmapFromArray.call_args.args[0]
    assert mask.shape == GEOMETRY.shape and mask.sum() == 200
    attributes = {c.args[0]: c.args[1] for c in segmentation.SetAttribute.call_args_list}
    assert attributes["MediSee.Answer"] == "Sure, it is the liver." and attributes["MediSee.ImageId"] == "ct-1"
    assert attributes["MediSee.VolumeID"] == "vtkMRMLScalarVolumeNode1" and '"liver": 0.9' in attributes["MediSee.Scores"]
    created = [c.args for c in slicer.mrmlScene.AddNewNodeByClass.call_args_list]
    assert ("vtkMRMLMarkupsROINode", "MediSee: liver (slice 3)") in created


def test_asking_the_same_question_again_reuses_its_node_and_removes_its_old_rois(module):
    slicer = sys.modules["slicer"]
    volume = mock.MagicMock(name="volume")
    volume.GetID.return_value = "vol"
    old = mock.MagicMock(name="old")
    old.GetAttribute.side_effect = {"MediSee.VolumeID": "vol", "MediSee.Query": "Where is the liver?"}.get
    slicer.util.getNodesByClass.return_value = [old]
    assert module.MediSeeLogic().show(volume, "ct-1", result()) is old
    old.GetSegmentation().RemoveAllSegments.assert_called_once()
    slicer.mrmlScene.RemoveNode.assert_called_with(old)  # the stand-in answers both class queries with ``old``


def test_geometry_comes_from_the_volumes_ijk_to_ras(module):
    vtk, slicer = sys.modules["vtk"], sys.modules["slicer"]
    matrix = GEOMETRY.ijk_to_ras()
    vtk.vtkMatrix4x4.return_value.GetElement.side_effect = lambda r, c: matrix[r, c]
    slicer.util.arrayFromVolume.return_value = np.zeros(GEOMETRY.shape)
    got = module.MediSeeLogic().geometry(mock.MagicMock())
    assert got.shape == GEOMETRY.shape and np.allclose(got.ijk_to_ras(), matrix)


def test_the_panel_builds_its_request_through_medisee_lib(module):
    widget = module.MediSeeWidget()
    widget.ui = mock.MagicMock()
    widget.logic = mock.MagicMock()
    widget.logic.geometry.return_value = GEOMETRY
    slice_node = mock.MagicMock()
    slice_node.GetOrientation.return_value = "Coronal"
    to_ras = GEOMETRY.ijk_to_ras()
    to_ras[:3, 3] = GEOMETRY.to_ras([48, 40, 4])  # the plane's centre
    slice_node.GetSliceToRAS.return_value.GetElement.side_effect = lambda r, c: to_ras[r, c]
    widget.last_slice_node = slice_node
    widget.ui.currentSliceRadio.checked = True
    widget.ui.boxSelector.currentNode.return_value = None
    widget.ui.pointSelector.currentNode.return_value = None
    assert widget.requestFor(mock.MagicMock(), "liver?") == {"query": "liver?", "slice": 40, "axis": "coronal"}
    with pytest.raises(NoVolumeSelected):
        widget.requestFor(None, "liver?")
    to_ras[:3, 3] = GEOMETRY.to_ras([48, 400, 4])
    with pytest.raises(OutsideVolume):
        widget.requestFor(mock.MagicMock(), "liver?")
