"""MediSee for 3D Slicer: ask a question about an image, see the answer as segments and boxes, correct, submit.

The widget only moves values between Qt and the logic; the logic does the scene work (nodes in, nodes
out) with MRML alone, so it runs on Slicer's non-Qt libraries too (``tests/medisee_slicer`` drives it
on a real scene); everything else (the server, geometry, scope, errors, the local server) lives in
``MediSeeLib``, which is pure Python and tested with pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from vtk.util import numpy_support

from MediSeeLib.client import MediSeeClient, normalize_url
from MediSeeLib.errors import MediSeeError, NoVolumeSelected
from MediSeeLib.geometry import Geometry
from MediSeeLib.install import project_install_plan, run_pip, server_installed, slicer_python
from MediSeeLib.jobs import PanelCalls
from MediSeeLib.local_server import LocalServer, start_local
from MediSeeLib.results import InferenceResult, RoiSpec, answer_text, roi_specs
from MediSeeLib.scope import Scope, panel_request, parse_history, remember, request_params, slice_index_at, view_axis
from MediSeeLib.workflow import AUTOMATIC_WINDOW, ask, fetch_next, image_id_for, models_text, submit_label, window_choices

SETTINGS_URL = "MediSee/ServerURL"
SETTINGS_HISTORY = "MediSee/QueryHistory"
SETTINGS_SOURCE = "MediSee/PackageSource"
SETTINGS_STUDIES = "MediSee/LocalStudies"  # the local server's studies folder; empty: the sample study
SAMPLE_DIR = Path.home() / ".medisee" / "sample-study"
DEFAULT_URL = "http://127.0.0.1:8000"
MODULE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = MODULE_DIR.parent  # a source checkout: pyproject.toml and requirements.lock live here
SAVED_CLASSES = ("vtkMRMLVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLMarkupsNode")  # what save_scene writes


class MediSee(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MediSee"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MediSee contributors"]
        self.parent.helpText = (
            "Ask a question about an image in plain language ('Which organ filters the blood?'). MediSee answers, segments "
            "and boxes every structure it names. Correct the segmentation and submit it to retrain the model. Needs a MONAI "
            "Label server with the MediSee app (./scripts/run.sh) or a local server started from this panel.")
        self.parent.acknowledgementText = "MediSee: reasoning segmentation of medical images, served with MONAI Label."


class MediSeeWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Slow calls run in :class:`BackgroundCall` threads polled by a timer, so the UI stays usable."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.calls = PanelCalls(on_error=self.showError, on_busy=self.setBusy)
        self.local = None
        self.local_lines = deque()
        self.last_slice_node = None
        self.current_segmentation = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/MediSee.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = MediSeeLogic()
        self.ui.serverUrlEdit.text = qt.QSettings().value(SETTINGS_URL, DEFAULT_URL)
        self.ui.queryComboBox.addItems(parse_history(qt.QSettings().value(SETTINGS_HISTORY, "[]")))
        self.ui.queryComboBox.setCurrentText("")
        for button, slot in ((self.ui.connectButton, self.onConnect), (self.ui.runButton, self.onRun),
                             (self.ui.cancelButton, self.onCancel), (self.ui.submitButton, self.onSubmit),
                             (self.ui.nextSampleButton, self.onNextSample), (self.ui.startServerButton, self.onStartServer),
                             (self.ui.stopServerButton, self.onStopServer)):
            button.connect("clicked(bool)", slot)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateView)
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTick)
        self.timer.start()
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair is not None:
            self.addObserver(crosshair, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent, self.onCursorMoved)
        self.updateView()

    def cleanup(self):
        self.removeObservers()
        self.timer.stop()
        if self.local is not None:
            self.local.stop()

    # --- server ---------------------------------------------------------------------------------
    def client(self) -> MediSeeClient:
        url = normalize_url(self.ui.serverUrlEdit.text)
        qt.QSettings().setValue(SETTINGS_URL, url)
        return MediSeeClient(url)

    def onConnect(self):
        client = self.client()
        self.ui.modelsLabel.text = f"connecting to {client.url} ..."
        self.start(client.connect, self.onConnected, busy=False)

    def onConnected(self, info: dict):
        self.ui.modelsLabel.text = models_text(info)
        self.ui.windowCombo.clear()
        self.ui.windowCombo.addItems(window_choices(info))

    def onStartServer(self):
        if self.busy() or (self.local is not None and self.local.running):
            return
        try:
            if not server_installed() and not self.install():
                return
            studies = qt.QSettings().value(SETTINGS_STUDIES, "") or None
            self.local, message = start_local(slicer_python(), studies, str(SAMPLE_DIR), self.local_lines.append)
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return
        local = self.local
        self.ui.localStatusLabel.text = f"{message} Starting on {local.url} (the first start prepares a sample study) ..."
        self.ui.startServerButton.enabled, self.ui.stopServerButton.enabled = False, True
        self.ui.serverUrlEdit.text = local.url
        # Stop pressed (or the process ended) while it starts: stop waiting quietly
        self.start(lambda: local.wait_until_ready(timeout=600, cancelled=lambda: self.local is not local),
                   lambda _: self.onLocalReady(local, message), busy=False)

    def onLocalReady(self, local: LocalServer, message: str):
        if local is self.local:
            self.ui.localStatusLabel.text = f"Running on {local.url}. {message}"
            self.onConnect()

    def onStopServer(self):
        if self.local is not None:
            self.local.stop()
            self.local = None
        self.ui.localStatusLabel.text = "Stopped."
        self.ui.startServerButton.enabled, self.ui.stopServerButton.enabled = True, False

    def install(self) -> bool:
        """Install MediSee into Slicer's Python after the user agrees; False if they do not or it fails."""
        plan = project_install_plan(PROJECT_DIR, qt.QSettings().value(SETTINGS_SOURCE, str(PROJECT_DIR)))
        if not slicer.util.confirmOkCancelDisplay(plan.summary() + "\nThis downloads several GB and takes a while. Go ahead?",
                                                  windowTitle="Install MediSee"):
            return False
        progress = slicer.util.createProgressDialog(labelText="Installing MediSee into Slicer's Python ...", maximum=0)
        try:
            run_pip(plan, slicer_python(), on_line=self.appendLog, tick=slicer.app.processEvents)
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return False
        finally:
            progress.close()
        return True

    # --- asking ---------------------------------------------------------------------------------
    def onRun(self):
        if self.busy():
            return
        volume, query = self.ui.inputVolumeSelector.currentNode(), self.ui.queryComboBox.currentText
        try:
            params = self.requestFor(volume, query)
            client = self.client()
            image_id, upload = self.logic.server_copy(volume, client.url)
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return
        self.remember(query)

        def work() -> InferenceResult:
            if upload is not None:
                try:
                    client.upload_image(upload, image_id)
                finally:
                    os.remove(upload)
            return ask(client, image_id, params)

        self.ui.answerBrowser.setPlainText(f"Asking: {params['query']} ...")
        self.start(work, lambda result: self.showResult(volume, client.url, image_id, result))

    def requestFor(self, volume, query: str) -> dict:
        """The request's params from the panel; MediSeeLib checks them (volume, query, prompts inside the image)."""
        if volume is None:
            raise NoVolumeSelected()
        geometry = self.logic.geometry(volume)
        axis = view_axis(self.sliceNode().GetOrientation())
        if self.ui.currentSliceRadio.checked:
            scope = Scope("slice", axis, self.logic.view_slice(self.sliceNode(), geometry))
        elif self.ui.rangeRadio.checked:
            scope = Scope("range", axis, self.ui.rangeFirstSpinBox.value, self.ui.rangeLastSpinBox.value)
        else:
            scope = Scope("all", axis)
        roi, fiducial = self.ui.boxSelector.currentNode(), self.ui.pointSelector.currentNode()
        corners = self.logic.roi_corners(roi) if roi is not None else None
        point = np.array(fiducial.GetNthControlPointPositionWorld(0)) if fiducial and fiducial.GetNumberOfControlPoints() else None
        window = self.ui.windowCombo.currentText
        return panel_request(geometry, query, scope, corners, point, None if window == AUTOMATIC_WINDOW else window)

    def showResult(self, volume, url: str, image_id: str, result: InferenceResult):
        self.logic.mark_server_copy(volume, url, image_id)
        self.current_segmentation = self.logic.show(volume, image_id, result, per_slice_rois=self.ui.roiPerSliceRadio.checked)
        self.ui.answerBrowser.setPlainText(answer_text(result))
        self.ui.submitButton.enabled = True

    def onSubmit(self):
        try:
            labels, geometry, names = self.logic.labels_of(self.current_segmentation)
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return
        segmentation = self.current_segmentation
        client, image_id, query = self.client(), segmentation.GetAttribute("MediSee.ImageId"), segmentation.GetAttribute("MediSee.Query")
        self.start(lambda: submit_label(client, image_id, labels, geometry, query, names),
                   lambda _: slicer.util.showStatusMessage(f"Submitted the label of '{query}' for {image_id}.", 5000))

    def onNextSample(self):
        client, folder, query = self.client(), tempfile.mkdtemp(prefix="medisee-next-"), self.ui.queryComboBox.currentText

        def loaded(chosen):
            image_id, path = chosen
            volume = self.logic.load_server_copy(path, client.url, image_id)
            shutil.rmtree(path.parent, ignore_errors=True)
            self.ui.inputVolumeSelector.setCurrentNode(volume)

        self.start(lambda: fetch_next(client, folder, query or None), loaded)

    # --- background calls -----------------------------------------------------------------------
    def start(self, function, on_done, busy: bool = True):
        """Run ``function`` in a thread; ``on_done(value)`` on the main thread, errors as messages."""
        if not self.calls.start(function, on_done, busy):
            slicer.util.errorDisplay("MediSee is still waiting for the previous answer: wait or cancel it.")

    def busy(self) -> bool:
        if self.calls.running():
            slicer.util.errorDisplay("MediSee is still waiting for the previous answer: wait or cancel it.")
        return self.calls.running()

    def onCancel(self):
        self.calls.cancel()
        self.ui.answerBrowser.setPlainText("Cancelled.")

    def onTick(self):
        while self.local_lines:
            self.appendLog(self.local_lines.popleft())
        if self.local is not None and not self.local.running:
            self.onStopServer()
            self.ui.localStatusLabel.text = "The local server has stopped: see its log."
        self.calls.poll()

    def showError(self, message: str):
        self.ui.answerBrowser.setPlainText(message)
        slicer.util.errorDisplay(message)

    def setBusy(self, busy: bool):
        self.ui.progressBar.visible = busy
        self.ui.progressBar.setRange(0, 0 if busy else 1)
        self.ui.cancelButton.enabled = busy
        for button in (self.ui.runButton, self.ui.submitButton, self.ui.nextSampleButton):
            button.enabled = not busy and (button is not self.ui.submitButton or self.current_segmentation is not None)

    # --- views, settings ------------------------------------------------------------------------
    def onCursorMoved(self, crosshair, _event=None):
        slice_node = crosshair.GetCursorPositionXYZ([0.0, 0.0, 0.0])
        if slice_node is not None:  # the mouse is in a slice view: that view is "current" until another is used
            self.last_slice_node = slice_node
            self.updateView()

    def sliceNode(self):
        """The slice view the user last worked in (red by default)."""
        return self.last_slice_node or slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()

    def updateView(self, *_):
        volume = self.ui.inputVolumeSelector.currentNode()
        if volume is None or volume.GetImageData() is None:
            self.ui.viewLabel.text = ""
            return
        try:
            index = self.logic.view_slice(self.sliceNode(), self.logic.geometry(volume))
            self.ui.viewLabel.text = f"{view_axis(self.sliceNode().GetOrientation())} slice {index}"
        except MediSeeError as err:
            self.ui.viewLabel.text = err.user_message

    def appendLog(self, line: str):
        self.ui.serverLogView.appendPlainText(line)

    def remember(self, query: str):
        history = remember(parse_history(qt.QSettings().value(SETTINGS_HISTORY, "[]")), query)
        qt.QSettings().setValue(SETTINGS_HISTORY, json.dumps(history))
        self.ui.queryComboBox.clear()
        self.ui.queryComboBox.addItems(history)
        self.ui.queryComboBox.setCurrentText(query)


class MediSeeLogic(ScriptedLoadableModuleLogic):
    """Scene work (nodes in, nodes out) around MediSeeLib, with MRML and the segmentations module logic
    only, so it runs wherever MRML does: the application, its Python console, the self-test, and a
    plain scene (``scene`` and the module logics given; tests/medisee_slicer/test_logic_on_mrml.py)."""

    def __init__(self, scene=None, segmentations=None, volumes=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene or slicer.mrmlScene
        self.segmentations = segmentations or slicer.modules.segmentations.logic()
        self.volumes = volumes or slicer.modules.volumes.logic()

    def geometry(self, volume) -> Geometry:
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        values = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        return Geometry.from_ijk_to_ras(values, volume.GetImageData().GetDimensions()[::-1])

    def view_slice(self, slice_node, geometry: Geometry) -> int:
        """The index of the slice a slice view shows, along its axis."""
        matrix = slice_node.GetSliceToRAS()
        center = np.array([matrix.GetElement(row, 3) for row in range(3)])
        return slice_index_at(geometry, view_axis(slice_node.GetOrientation()), center)

    def roi_corners(self, roi) -> np.ndarray:
        bounds = [0.0] * 6
        roi.GetRASBounds(bounds)
        return np.array([[x, y, z] for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])

    # --- the server's copy of a volume ------------------------------------------------------------
    def server_copy(self, volume, url: str) -> tuple:
        """The image id the server knows ``volume`` by, and a NIfTI file to upload first (None when it has it)."""
        known = volume.GetAttribute("MediSee.ServerURL") == url and volume.GetAttribute("MediSee.ImageId")
        if known:
            return known, None
        return image_id_for(f"{volume.GetName()}-{volume.GetID()}"), self.export_volume(volume)

    def mark_server_copy(self, volume, url: str, image_id: str):
        volume.SetAttribute("MediSee.ServerURL", url)
        volume.SetAttribute("MediSee.ImageId", image_id)

    def export_volume(self, volume) -> str:
        """The volume as a temporary NIfTI file for upload (the caller deletes it)."""
        handle, path = tempfile.mkstemp(prefix="medisee-upload-", suffix=".nii.gz")
        os.close(handle)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(path)
        if not storage.WriteData(volume):
            os.remove(path)
            raise MediSeeError(f"The volume '{volume.GetName()}' could not be written for upload.")
        return path

    def load_server_copy(self, path: Path, url: str, image_id: str):
        """A downloaded study as a volume node, marked as the server's ``image_id``."""
        node = self.volumes.AddArchetypeVolume(str(path), image_id, 0)
        if node is None:
            raise MediSeeError(f"The study {image_id} could not be read.")
        self.mark_server_copy(node, url, image_id)
        return node

    def run(self, volume, query: str, scope: Scope, client: MediSeeClient, per_slice_rois: bool = False):
        """Ask synchronously (console, self-test): upload the volume, ask, show; returns the segmentation node."""
        params = request_params(query, scope, volume_selected=volume is not None)
        image_id, path = self.server_copy(volume, client.url)
        if path is not None:
            try:
                client.upload_image(path, image_id)
            finally:
                os.remove(path)
            self.mark_server_copy(volume, client.url, image_id)
        return self.show(volume, image_id, ask(client, image_id, params), per_slice_rois)

    # --- answers as nodes ---------------------------------------------------------------------------
    def show(self, volume, image_id: str, result: InferenceResult, per_slice_rois: bool = False):
        """One segmentation node per (volume, query), replaced when asked again; one segment per entity,
        on the volume's grid, with its terminology; the answer as node attributes; the boxes as ROIs."""
        segmentation = self._node_for(volume, result.query, "vtkMRMLSegmentationNode")
        if segmentation is None:
            segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"MediSee: {result.query}")
            segmentation.CreateDefaultDisplayNodes()
        segmentation.GetSegmentation().RemoveAllSegments()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        for spec in result.segments:
            segment_id = segmentation.GetSegmentation().AddEmptySegment(spec.name, spec.name, list(spec.color))
            if spec.terminology:
                segment = segmentation.GetSegmentation().GetSegment(segment_id)
                segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
            mask = self._oriented_image(volume, spec.mask)
            self.segmentations.SetBinaryLabelmapToSegment(mask, segmentation, segment_id,
                                                          slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE, mask.GetExtent())
        attributes = result.attributes() | {"MediSee.VolumeID": volume.GetID(), "MediSee.ImageId": image_id}
        for key, value in attributes.items():
            segmentation.SetAttribute(key, value)
        self._replace_rois(volume, result, roi_specs(result, per_slice=per_slice_rois))
        return segmentation

    def labels_of(self, segmentation):
        """The segmentation as one label array on its volume's grid (segment n -> value n + 1), with the name of every value."""
        if segmentation is None or self.scene.GetNodeByID(segmentation.GetID()) is None:
            raise MediSeeError("Run a question first: its segmentation is what gets submitted.")
        volume = self.scene.GetNodeByID(segmentation.GetAttribute("MediSee.VolumeID") or "")
        if volume is None:
            raise MediSeeError("The input volume of this segmentation is no longer in the scene.")
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentation().GetSegmentIDs(ids)
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            self.segmentations.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
            labels = self._array(labelmap.GetImageData())
        finally:
            self.scene.RemoveNode(labelmap)
        names = {i + 1: segmentation.GetSegmentation().GetSegment(ids.GetValue(i)).GetName() for i in range(ids.GetNumberOfValues())}
        return labels, self.geometry(volume), names

    def save_scene(self, path) -> Path:
        """The scene as ``path`` (.mrml) with its volumes (.nrrd), segmentations (.seg.nrrd) and markups
        (.mrk.json) written beside it, as Slicer's Save dialog writes them; the node attributes keep the answers."""
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        for class_name in SAVED_CLASSES:
            for node in self._nodes(class_name):
                if node.GetStorageNode() is None:
                    node.AddDefaultStorageNode()
                storage = node.GetStorageNode()
                name = f"{image_id_for(node.GetName())}-{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"
                storage.SetFileName(str(path.parent / name))
                if not storage.WriteData(node):
                    raise MediSeeError(f"'{node.GetName()}' could not be written into {path.parent}.")
        self.scene.SetRootDirectory(str(path.parent))
        self.scene.SetURL(str(path))
        if not self.scene.Commit():
            raise MediSeeError(f"The scene could not be written to {path}.")
        return path

    def _replace_rois(self, volume, result: InferenceResult, specs: list[RoiSpec]):
        for node in self._nodes_for(volume, result.query, "vtkMRMLMarkupsROINode"):
            self.scene.RemoveNode(node)
        colors = {s.label: s.color for s in result.segments}
        for spec in specs:
            roi = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"MediSee: {spec.name}")
            roi.CreateDefaultDisplayNodes()
            matrix = vtk.vtkMatrix4x4()
            for row in range(3):
                for column in range(3):
                    matrix.SetElement(row, column, float(spec.axes[row, column]))
                matrix.SetElement(row, 3, float(spec.center[row]))
            roi.SetAndObserveObjectToNodeMatrix(matrix)
            roi.SetSize(*spec.size)
            roi.GetDisplayNode().SetSelectedColor(*colors.get(spec.label, (1.0, 1.0, 0.0)))
            roi.SetAttribute("MediSee.VolumeID", volume.GetID())
            roi.SetAttribute("MediSee.Query", result.query)
            roi.SetAttribute("MediSee.Label", str(spec.label))

    def _oriented_image(self, volume, mask: np.ndarray):
        """``mask`` (numpy (k, j, i)) as a binary labelmap on the volume's grid and IJK -> RAS."""
        image = self.segmentations.CreateOrientedImageDataFromVolumeNode(volume)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        self._array(image)[:] = mask.astype(np.uint8)
        image.Modified()
        return image

    @staticmethod
    def _array(image) -> np.ndarray:
        """A numpy (k, j, i) view of a VTK image's scalars."""
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])

    def _nodes(self, class_name: str) -> list:
        collection = self.scene.GetNodesByClass(class_name)
        return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]

    def _nodes_for(self, volume, query: str, class_name: str) -> list:
        return [node for node in self._nodes(class_name)
                if node.GetAttribute("MediSee.VolumeID") == volume.GetID() and node.GetAttribute("MediSee.Query") == query]

    def _node_for(self, volume, query: str, class_name: str):
        nodes = self._nodes_for(volume, query, class_name)
        return nodes[0] if nodes else None


class MediSeeTest(ScriptedLoadableModuleTest):
    """Inside Slicer: a sample CT, one question to the server in the settings (start it with --conf threshold 0.0)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_a_question_makes_a_segment()

    def test_a_question_makes_a_segment(self):
        import SampleData  # Slicer's sample-data module: only inside the application, for its self-test

        volume = SampleData.downloadSample("CTChest")
        url = qt.QSettings().value(SETTINGS_URL, DEFAULT_URL)
        self.delayDisplay(f"Asking {url}")
        logic = MediSeeLogic()
        geometry = logic.geometry(volume)
        middle = geometry.num_slices("axial") // 2
        segmentation = logic.run(volume, "Where is the heart?", Scope("range", "axial", middle - 2, middle + 2), MediSeeClient(url))
        self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        self.assertEqual(segmentation.GetAttribute("MediSee.Query"), "Where is the heart?")
        again = logic.run(volume, "Where is the heart?", Scope("slice", "axial", middle), MediSeeClient(url))
        self.assertEqual(again.GetID(), segmentation.GetID())  # the same question replaces its results
        self.delayDisplay("Test passed")
