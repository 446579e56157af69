"""MediSee for 3D Slicer: ask a question about an image, see the answer as segments and boxes, correct, submit.

The widget only moves values between Qt, the MRML scene and ``MediSeeLib``; everything else (the
server, geometry, scope, errors, the local server) lives in ``MediSeeLib``, which is tested with pytest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
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

from MediSeeLib.client import MediSeeClient, normalize_url
from MediSeeLib.errors import MediSeeError, NoVolumeSelected
from MediSeeLib.geometry import Geometry
from MediSeeLib.install import device_choice, has_gpu, installed_distributions, plan_install, read_requirements
from MediSeeLib.jobs import BackgroundCall
from MediSeeLib.local_server import LocalServer, free_port, serve_command
from MediSeeLib.results import InferenceResult, RoiSpec, roi_specs
from MediSeeLib.scope import Scope, box_prompt, point_prompt, remember, request_params, slice_index_at, view_axis
from MediSeeLib.workflow import ask, fetch_next, image_id_for, submit_label

SETTINGS_URL = "MediSee/ServerURL"
SETTINGS_HISTORY = "MediSee/QueryHistory"
SETTINGS_SOURCE = "MediSee/PackageSource"
SETTINGS_STUDIES = "MediSee/LocalStudies"  # the local server's studies folder; empty: the sample study
SAMPLE_DIR = Path.home() / ".medisee" / "sample-study"
DEFAULT_URL = "http://127.0.0.1:8000"
MODULE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = MODULE_DIR.parent  # a source checkout: pyproject.toml and requirements.lock live here


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
        self.call = None
        self.on_done = None
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

        settings = qt.QSettings()
        self.ui.serverUrlEdit.text = settings.value(SETTINGS_URL, DEFAULT_URL)
        self.ui.queryComboBox.addItems(self._history())
        self.ui.queryComboBox.setCurrentText("")

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.nextSampleButton.connect("clicked(bool)", self.onNextSample)
        self.ui.startServerButton.connect("clicked(bool)", self.onStartServer)
        self.ui.stopServerButton.connect("clicked(bool)", self.onStopServer)
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
        self.start(client.connect, self.showModels, busy=False)

    def showModels(self, info: dict):
        model = info["models"]["medisee"].get("medisee", {})
        others = [name for name in info.get("models", {}) if name != "medisee"]
        text = f"medisee ({model.get('device', '?')}, {model.get('precision', '?')})"
        self.ui.modelsLabel.text = text + (f"; also: {', '.join(others)}" if others else "")

    def onStartServer(self):
        if self.busy() or (self.local is not None and self.local.running):
            return
        try:
            python = self.logic.python()
            if not self.logic.server_installed() and not self.install():
                return
            device, message = device_choice(has_gpu())
            port = free_port()
            studies = qt.QSettings().value(SETTINGS_STUDIES, "") or None
            command = serve_command(python, studies, port, [("device", device)], sample_dir=str(SAMPLE_DIR))
            self.local = LocalServer(command, f"http://127.0.0.1:{port}", on_log=self.local_lines.append)
            self.local.start()
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return
        self.ui.localStatusLabel.text = f"{message} Starting on port {port} (the first start prepares a sample study) ..."
        self.ui.startServerButton.enabled, self.ui.stopServerButton.enabled = False, True
        self.ui.serverUrlEdit.text = self.local.url
        local = self.local

        def stopped() -> bool:  # Stop pressed (or the process ended) while it starts: stop waiting quietly
            return self.local is not local

        self.start(lambda: local.wait_until_ready(timeout=600, cancelled=stopped), lambda _: self.onLocalReady(local, message), busy=False)

    def onLocalReady(self, local: LocalServer, message: str):
        if local is not self.local:
            return
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
        plan = self.logic.install_plan()
        if not slicer.util.confirmOkCancelDisplay(plan.summary() + "\nThis downloads several GB and takes a while. Go ahead?",
                                                  windowTitle="Install MediSee"):
            return False
        progress = slicer.util.createProgressDialog(labelText="Installing MediSee into Slicer's Python ...", maximum=0)
        try:
            self.logic.run_pip(plan, on_line=self.appendLog)
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
        volume = self.ui.inputVolumeSelector.currentNode()
        query = self.ui.queryComboBox.currentText
        try:
            params = self.requestFor(volume, query)
            client = self.client()
            known = volume.GetAttribute("MediSee.ServerURL") == client.url and volume.GetAttribute("MediSee.ImageId")
            upload = None if known else self.logic.export_volume(volume)
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return
        self.remember(query)
        image_id = known or image_id_for(f"{volume.GetName()}-{volume.GetID()}")

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
            scope = Scope("slice", axis, self.viewSlice(geometry)[1])
        elif self.ui.rangeRadio.checked:
            scope = Scope("range", axis, self.ui.rangeFirstSpinBox.value, self.ui.rangeLastSpinBox.value)
        else:
            scope = Scope("all", axis)
        box = point = prompt_slice = None
        roi = self.ui.boxSelector.currentNode()
        if roi is not None:
            corners = self.logic.roi_corners(roi)
            box, prompt_slice = box_prompt(geometry, axis, corners), slice_index_at(geometry, axis, corners.mean(axis=0))
        fiducial = self.ui.pointSelector.currentNode()
        if fiducial is not None and fiducial.GetNumberOfControlPoints():
            point, prompt_slice = point_prompt(geometry, axis, np.array(fiducial.GetNthControlPointPositionWorld(0)))
        return request_params(query, scope, box=box, point=point, prompt_slice=prompt_slice)

    def showResult(self, volume, url: str, image_id: str, result: InferenceResult):
        volume.SetAttribute("MediSee.ServerURL", url)
        volume.SetAttribute("MediSee.ImageId", image_id)
        self.current_segmentation = self.logic.show(volume, image_id, result, per_slice_rois=self.ui.roiPerSliceRadio.checked)
        lines = [result.answer or "(fast mode: masks only)", ""]
        lines += [f"{s.name}: score {s.score:.2f}, slices {s.slices}" for s in result.segments] or ["No target found."]
        self.ui.answerBrowser.setPlainText("\n".join(lines))
        self.ui.submitButton.enabled = True

    def onSubmit(self):
        segmentation = self.current_segmentation
        if segmentation is None or slicer.mrmlScene.GetNodeByID(segmentation.GetID()) is None:
            slicer.util.errorDisplay("Run a question first: its segmentation is what gets submitted.")
            return
        try:
            labels, geometry, names = self.logic.labels_of(segmentation)
        except MediSeeError as err:
            slicer.util.errorDisplay(err.user_message)
            return
        client, image_id, query = self.client(), segmentation.GetAttribute("MediSee.ImageId"), segmentation.GetAttribute("MediSee.Query")
        self.start(lambda: submit_label(client, image_id, labels, geometry, query, names),
                   lambda _: slicer.util.showStatusMessage(f"Submitted the label of '{query}' for {image_id}.", 5000))

    def onNextSample(self):
        client, folder, query = self.client(), tempfile.mkdtemp(prefix="medisee-next-"), self.ui.queryComboBox.currentText
        self.start(lambda: fetch_next(client, folder, query or None), lambda chosen: self.loadNext(client.url, *chosen))

    def loadNext(self, url: str, image_id: str, path: Path):
        volume = slicer.util.loadVolume(str(path))
        volume.SetName(image_id)
        volume.SetAttribute("MediSee.ServerURL", url)
        volume.SetAttribute("MediSee.ImageId", image_id)
        shutil.rmtree(path.parent, ignore_errors=True)
        self.ui.inputVolumeSelector.setCurrentNode(volume)

    # --- background calls -----------------------------------------------------------------------
    def start(self, function, on_done, busy: bool = True):
        """Run ``function`` in a thread; ``on_done(value)`` on the main thread, errors as messages."""
        if self.busy():
            return
        self.call, self.on_done = BackgroundCall(function), on_done
        self.setBusy(busy)

    def busy(self) -> bool:
        if self.call is not None and not self.call.done():
            slicer.util.errorDisplay("MediSee is still waiting for the previous answer: wait or cancel it.")
            return True
        return False

    def onCancel(self):
        if self.call is not None:
            self.call.cancel()
        self.call = None
        self.setBusy(False)
        self.ui.answerBrowser.setPlainText("Cancelled.")

    def onTick(self):
        while self.local_lines:
            self.appendLog(self.local_lines.popleft())
        if self.local is not None and not self.local.running:
            self.onStopServer()
            self.ui.localStatusLabel.text = "The local server has stopped: see its log."
        if self.call is None or not self.call.done():
            return
        call, on_done, self.call = self.call, self.on_done, None
        self.setBusy(False)
        try:
            on_done(call.result())
        except MediSeeError as err:
            self.ui.answerBrowser.setPlainText(err.user_message)
            slicer.util.errorDisplay(err.user_message)
        except Exception as err:  # a bug: logged with its traceback, shown as one line
            logging.exception("MediSee")
            slicer.util.errorDisplay(f"Unexpected error: {err}. Details are in the Python console.")

    def setBusy(self, busy: bool):
        self.ui.progressBar.visible = busy
        self.ui.progressBar.setRange(0, 0 if busy else 1)
        self.ui.cancelButton.enabled = busy
        for button in (self.ui.runButton, self.ui.submitButton, self.ui.nextSampleButton):
            button.enabled = not busy and (button is not self.ui.submitButton or self.current_segmentation is not None)

    # --- views, settings ------------------------------------------------------------------------
    def onCursorMoved(self, crosshair, _event=None):
        position = [0.0, 0.0, 0.0]
        slice_node = crosshair.GetCursorPositionXYZ(position)
        if slice_node is not None:  # the mouse is in a slice view: that view is "current" until another is used
            self.last_slice_node = slice_node
            self.updateView()

    def sliceNode(self):
        """The slice view the user last worked in (red by default)."""
        return self.last_slice_node or slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()

    def viewSlice(self, geometry: Geometry) -> tuple[str, int]:
        """The axis and slice index shown in that view."""
        node = self.sliceNode()
        matrix = node.GetSliceToRAS()
        center = np.array([matrix.GetElement(row, 3) for row in range(3)])
        axis = view_axis(node.GetOrientation())
        return axis, slice_index_at(geometry, axis, center)

    def updateView(self, *_):
        volume = self.ui.inputVolumeSelector.currentNode()
        if volume is None or volume.GetImageData() is None:
            self.ui.viewLabel.text = ""
            return
        try:
            axis, index = self.viewSlice(self.logic.geometry(volume))
            self.ui.viewLabel.text = f"{axis} slice {index}"
        except MediSeeError as err:
            self.ui.viewLabel.text = err.user_message

    def appendLog(self, line: str):
        self.ui.serverLogView.appendPlainText(line)

    def _history(self) -> list[str]:
        stored = qt.QSettings().value(SETTINGS_HISTORY, "[]")
        try:
            return [str(q) for q in json.loads(stored)]
        except (TypeError, ValueError):
            return []

    def remember(self, query: str):
        history = remember(self._history(), query)
        qt.QSettings().setValue(SETTINGS_HISTORY, json.dumps(history))
        self.ui.queryComboBox.clear()
        self.ui.queryComboBox.addItems(history)
        self.ui.queryComboBox.setCurrentText(query)


class MediSeeLogic(ScriptedLoadableModuleLogic):
    """Scene work (nodes in, nodes out) around MediSeeLib; usable from the Python console and the self-test."""

    def geometry(self, volume) -> Geometry:
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        values = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        return Geometry.from_ijk_to_ras(values, slicer.util.arrayFromVolume(volume).shape[:3])

    def export_volume(self, volume) -> str:
        """The volume as a temporary NIfTI file for upload (the caller deletes it)."""
        handle, path = tempfile.mkstemp(prefix="medisee-upload-", suffix=".nii.gz")
        os.close(handle)
        if not slicer.util.exportNode(volume, path):
            raise MediSeeError(f"The volume '{volume.GetName()}' could not be written for upload.")
        return path

    def roi_corners(self, roi) -> np.ndarray:
        bounds = [0.0] * 6
        roi.GetRASBounds(bounds)
        return np.array([[x, y, z] for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])

    def run(self, volume, query: str, scope: Scope, client: MediSeeClient, per_slice_rois: bool = True):
        """Ask synchronously (console, self-test): upload the volume, ask, show; returns the segmentation node."""
        params = request_params(query, scope, volume_selected=volume is not None)
        image_id = image_id_for(f"{volume.GetName()}-{volume.GetID()}")
        path = self.export_volume(volume)
        try:
            client.upload_image(path, image_id)
        finally:
            os.remove(path)
        return self.show(volume, image_id, ask(client, image_id, params), per_slice_rois)

    def show(self, volume, image_id: str, result: InferenceResult, per_slice_rois: bool = True):
        """One segmentation node per (volume, query), replaced when asked again; one segment per entity; ROIs."""
        segmentation = self._node_for(volume, result.query, "vtkMRMLSegmentationNode")
        if segmentation is None:
            segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"MediSee: {result.query}")
            segmentation.CreateDefaultDisplayNodes()
        segmentation.GetSegmentation().RemoveAllSegments()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        for spec in result.segments:
            segment_id = segmentation.GetSegmentation().AddEmptySegment(spec.name, spec.name, list(spec.color))
            if spec.terminology:
                segment = segmentation.GetSegmentation().GetSegment(segment_id)
                segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
            slicer.util.updateSegmentBinaryLabelmapFromArray(spec.mask.astype(np.uint8), segmentation, segment_id, volume)
        attributes = result.attributes() | {"MediSee.VolumeID": volume.GetID(), "MediSee.ImageId": image_id}
        for key, value in attributes.items():
            segmentation.SetAttribute(key, value)
        self._replace_rois(volume, result, roi_specs(result, per_slice=per_slice_rois))
        return segmentation

    def labels_of(self, segmentation):
        """The segmentation as one label array on its volume's grid, with the name of every value."""
        volume = slicer.mrmlScene.GetNodeByID(segmentation.GetAttribute("MediSee.VolumeID") or "")
        if volume is None:
            raise MediSeeError("The input volume of this segmentation is no longer in the scene.")
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentation().GetSegmentIDs(ids)
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
            labels = slicer.util.arrayFromVolume(labelmap).copy()
        finally:
            slicer.mrmlScene.RemoveNode(labelmap)
        names = {i + 1: segmentation.GetSegmentation().GetSegment(ids.GetValue(i)).GetName() for i in range(ids.GetNumberOfValues())}
        return labels, self.geometry(volume), names

    def _replace_rois(self, volume, result: InferenceResult, specs: list[RoiSpec]):
        for node in self._nodes_for(volume, result.query, "vtkMRMLMarkupsROINode"):
            slicer.mrmlScene.RemoveNode(node)
        colors = {s.label: s.color for s in result.segments}
        for spec in specs:
            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"MediSee: {spec.name}")
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

    def _nodes_for(self, volume, query: str, class_name: str) -> list:
        return [node for node in slicer.util.getNodesByClass(class_name)
                if node.GetAttribute("MediSee.VolumeID") == volume.GetID() and node.GetAttribute("MediSee.Query") == query]

    def _node_for(self, volume, query: str, class_name: str):
        nodes = self._nodes_for(volume, query, class_name)
        return nodes[0] if nodes else None

    # --- local mode -----------------------------------------------------------------------------
    def python(self) -> str:
        """Slicer's Python launcher (a plain ``python`` would not find Slicer's packages)."""
        return shutil.which("PythonSlicer") or sys.executable

    def server_installed(self) -> bool:
        import importlib.util

        return all(importlib.util.find_spec(name) is not None for name in ("monailabel_app", "medisee", "monailabel"))

    def install_plan(self):
        lock = PROJECT_DIR / "requirements.lock"
        if not lock.exists():
            raise MediSeeError(f"MediSee's requirements were not found next to the module ({lock}): install MediSee from its "
                               "source checkout, or start a server with ./scripts/run.sh and connect to it.")
        source = qt.QSettings().value(SETTINGS_SOURCE, str(PROJECT_DIR))
        return plan_install(read_requirements(lock), installed_distributions(), source)

    def run_pip(self, plan, on_line):
        """pip in Slicer's Python, its output streamed to ``on_line``; never reinstalls what Slicer ships (``--no-deps``)."""
        import subprocess

        process = subprocess.Popen(plan.pip_command(self.python()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            on_line(line.rstrip())
            slicer.app.processEvents()
        if process.wait() != 0:
            raise MediSeeError(f"Installing MediSee failed (pip exit code {process.returncode}); see the server log box.")


class MediSeeTest(ScriptedLoadableModuleTest):
    """Inside Slicer: a sample CT, one question to the server in the settings (start it with --conf threshold 0.0)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_a_question_makes_a_segment()

    def test_a_question_makes_a_segment(self):
        import SampleData

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
