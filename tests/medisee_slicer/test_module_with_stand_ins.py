"""MediSee.py's widget, the Qt panel, which needs the Slicer application: run with stand-ins for its Qt
parts (``module`` in conftest.py, real slicer-core and vtk otherwise), the request it builds from the panel
goes through the logic and MediSeeLib. The logic itself runs on real MRML in test_logic_on_mrml.py."""

from __future__ import annotations

from unittest import mock

import pytest
from MediSeeLib.errors import NoVolumeSelected, OutsideVolume
from MediSeeLib.geometry import Geometry

GEOMETRY = Geometry(shape=(8, 96, 96), spacing=(3.0, 3.0, 25.0), origin=(-120.0, -130.0, 40.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_the_panel_builds_its_request_through_medisee_lib(module):
    widget = module.MediSeeWidget()
    widget.ui = mock.MagicMock()
    widget.logic = module.MediSeeLogic(scene=mock.MagicMock(), segmentations=mock.MagicMock(), volumes=mock.MagicMock())
    widget.logic.geometry = lambda volume: GEOMETRY
    slice_node = mock.MagicMock()
    slice_node.GetOrientation.return_value = "Coronal"
    to_ras = GEOMETRY.ijk_to_ras()
    to_ras[:3, 3] = GEOMETRY.to_ras([48, 40, 4])  # the plane's centre
    slice_node.GetSliceToRAS.return_value.GetElement.side_effect = lambda r, c: to_ras[r, c]
    widget.last_slice_node = slice_node
    widget.ui.currentSliceRadio.checked = True
    widget.ui.boxSelector.currentNode.return_value = None
    widget.ui.pointSelector.currentNode.return_value = None
    widget.ui.windowCombo.currentText = "automatic"  # the server's own window: none sent
    assert widget.requestFor(mock.MagicMock(), "liver?") == {"query": "liver?", "slice": 40, "axis": "coronal"}
    widget.ui.windowCombo.currentText = "lung"
    assert widget.requestFor(mock.MagicMock(), "liver?")["window"] == "lung"
    widget.ui.windowCombo.currentText = "automatic"
    with pytest.raises(NoVolumeSelected):
        widget.requestFor(None, "liver?")
    to_ras[:3, 3] = GEOMETRY.to_ras([48, 400, 4])
    with pytest.raises(OutsideVolume):
        widget.requestFor(mock.MagicMock(), "liver?")
