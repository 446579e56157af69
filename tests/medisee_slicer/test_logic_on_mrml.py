"""MediSeeLogic on a real MRML scene (Slicer's own libraries from the slicer-core wheel, no
application; the ``module`` fixture in conftest.py): the server's answers about the sample study's CT (NIfTI and DICOM series) and the
MNI brain become segmentation and ROI nodes, checked voxel by voxel against SimpleITK's reading,
and a scene the logic writes loads back the same. Stand-ins remain only for Qt and the
application's ScriptedLoadableModule base classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from MediSeeLib.answer import Answer
from MediSeeLib.client import MediSeeClient
from MediSeeLib.results import roi_specs
from MediSeeLib.scope import Scope, request_params
from MediSeeLib.terminology import code_for
from MediSeeLib.workflow import ask
from trame_slicer.core import SlicerApp

from medisee.data.demo.sample_study import BRAIN_ID, CT_ID, build_sample_study
from tests.support.mrml import array_of, ijk_to_ras, load_volume, nodes, read_sitk, segment_mask, sitk_ijk_to_ras
from tests.support.server import PLUMBING_CONF, monailabel_server



@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    build_sample_study(out)
    return out


@pytest.fixture(scope="module")
def answers(sample, tmp_path_factory):
    """The server's answers (MediSeeLib results) by image: CT NIfTI, CT DICOM series (by path), brain."""
    work = tmp_path_factory.mktemp("server")
    with monailabel_server(sample / "studies", work, conf=PLUMBING_CONF | {"image_folders": str(sample)}) as server:
        client = MediSeeClient(server.url, infer_timeout=300)
        return {
            "nifti": ask(client, CT_ID, request_params("Where is the liver?", Scope("range", "axial", 18, 21))),
            "dicom": ask(client, str(sample / "dicom" / CT_ID),
                         request_params("Please segment the liver and the stomach.", Scope("range", "axial", 18, 21))),
            "brain": ask(client, BRAIN_ID, request_params("outline the white matter", Scope("range", "axial", 56, 58))),
        }


def image_path(sample, which: str):
    return {"nifti": sample / "studies" / f"{CT_ID}.nii.gz", "dicom": sample / "dicom" / CT_ID,
            "brain": sample / "studies" / f"{BRAIN_ID}.nii.gz"}[which]


@pytest.fixture
def app():
    return SlicerApp()


def shown(module, app, sample, answers, which: str, per_slice: bool = True):
    logic = module.MediSeeLogic(app.scene, app.segmentations_logic, app.volumes_logic)
    volume = load_volume(app, image_path(sample, which))
    return logic, volume, logic.show(volume, f"{which}-id", answers[which], per_slice_rois=per_slice)


@pytest.mark.parametrize("which", ["nifti", "dicom", "brain"])
def test_volume_nodes_read_as_simpleitk_reads_them_and_as_the_server_saw_them(module, app, sample, answers, which):
    image = read_sitk(image_path(sample, which))
    volume = load_volume(app, image_path(sample, which))
    assert np.array_equal(array_of(volume.GetImageData()), sitk.GetArrayFromImage(image))
    assert np.allclose(ijk_to_ras(volume), sitk_ijk_to_ras(image), atol=1e-3)
    geometry = module.MediSeeLogic(app.scene, app.segmentations_logic, app.volumes_logic).geometry(volume)
    assert geometry.shape == answers[which].geometry.shape
    assert np.allclose(geometry.ijk_to_ras(), answers[which].geometry.ijk_to_ras(), atol=1e-3)


@pytest.mark.parametrize("which", ["nifti", "dicom", "brain"])
def test_one_segment_per_structure_on_the_volumes_grid_voxel_by_voxel(module, app, sample, answers, which):
    result = answers[which]
    assert result.segments, "threshold 0 reports every grounded entity"
    _, volume, segmentation = shown(module, app, sample, answers, which)
    segments = segmentation.GetSegmentation()
    ids = [segments.GetNthSegmentID(i) for i in range(segments.GetNumberOfSegments())]
    names = [segments.GetSegment(i).GetName() for i in ids]
    assert names == [p for p, _ in sorted(result.response.label_names.items(), key=lambda item: item[1])]
    for segment_id, spec in zip(ids, result.segments):
        mask = segment_mask(app, segmentation, segment_id, volume)
        assert mask.any() and np.array_equal(mask, result.labels == spec.label), spec.name  # labels: SimpleITK's reading
        painted = sorted(set(np.nonzero(mask)[0].tolist()))
        assert set(painted) <= set(result.slices) and painted == [s for s in spec.slices if mask[s].any()]


def test_segments_carry_their_terminology_and_the_node_keeps_the_answer(module, app, sample, answers):
    result = answers["dicom"]
    _, volume, segmentation = shown(module, app, sample, answers, "dicom")
    segments = segmentation.GetSegmentation()
    for i, spec in enumerate(result.segments):
        tag = segments.GetSegment(segments.GetNthSegmentID(i)).GetTerminology()
        code = code_for(spec.name)
        if code is None:
            assert not tag
            continue
        entry = slicer.vtkSlicerTerminologyEntry()
        assert app.terminologies_logic.DeserializeTerminologyEntry(tag, entry)
        assert entry.GetTypeObject().GetCodeValue() == code.value and entry.GetCategoryObject().GetCodeValue() == "123037004"
    assert segmentation.GetAttribute("MediSee.Query") == "Please segment the liver and the stomach."
    assert segmentation.GetAttribute("MediSee.VolumeID") == volume.GetID()
    kept = Answer.from_dict(json.loads(segmentation.GetAttribute("MediSee.AnswerJSON")))
    assert kept == result.response and json.loads(segmentation.GetAttribute("MediSee.Slices")) == [18, 19, 20, 21]


@pytest.mark.parametrize("which", ["nifti", "brain"])
def test_rois_sit_on_their_slice_around_their_box(module, app, sample, answers, which):
    result = answers[which]
    image = read_sitk(image_path(sample, which))
    _, volume, _ = shown(module, app, sample, answers, which)
    rois = {roi.GetName(): roi for roi in nodes(app, "vtkMRMLMarkupsROINode")}
    specs = roi_specs(result, per_slice=True)
    assert set(rois) == {f"MediSee: {spec.name}" for spec in specs}
    for spec in specs:
        roi = rois[f"MediSee: {spec.name}"]
        center = [0.0, 0.0, 0.0]
        roi.GetCenterWorld(center)
        # the centre, through SimpleITK's geometry: on the ROI's slice, inside its box in the slice's pixels
        index = image.TransformPhysicalPointToContinuousIndex([-center[0], -center[1], center[2]])
        normal, row, column = result.geometry.plane_axes(result.axis)
        numpy_index = index[::-1]
        entity = next(e for e in result.response.entities if e.label == spec.label)
        x0, y0, x1, y1 = entity.slices[str(spec.slice)].box
        assert round(numpy_index[normal]) == spec.slice
        assert x0 - 0.5 <= numpy_index[column] <= x1 and y0 - 0.5 <= numpy_index[row] <= y1
        assert np.allclose(roi.GetSize(), spec.size, atol=1e-4)
        to_world = np.array([[roi.GetObjectToWorldMatrix().GetElement(r, c) for c in range(3)] for r in range(3)])
        assert np.allclose(to_world, spec.axes, atol=1e-6)  # edges along the image's axes
        assert roi.GetAttribute("MediSee.VolumeID") == volume.GetID()


def test_a_3d_roi_spans_the_entitys_slices(module, app, sample, answers):
    result = answers["nifti"]
    _, _, _ = shown(module, app, sample, answers, "nifti", per_slice=False)
    (roi,) = nodes(app, "vtkMRMLMarkupsROINode")
    entity = result.response.entities[0]
    thickness = roi.GetSize()[2]
    first, last = min(map(int, entity.slices)), max(map(int, entity.slices))
    assert thickness == pytest.approx((last - first + 1) * result.geometry.spacing[2], abs=1e-4)


def test_asking_again_replaces_the_nodes_and_the_labels_go_back_as_submitted(module, app, sample, answers):
    result = answers["dicom"]
    logic, volume, segmentation = shown(module, app, sample, answers, "dicom")
    again = logic.show(volume, "dicom-id", result)
    assert again.GetID() == segmentation.GetID() and len(nodes(app, "vtkMRMLSegmentationNode")) == 1
    assert len(nodes(app, "vtkMRMLMarkupsROINode")) == len(roi_specs(result))
    labels, geometry, names = logic.labels_of(segmentation)
    assert np.allclose(geometry.ijk_to_ras(), result.geometry.ijk_to_ras(), atol=1e-3)
    for value, name in names.items():  # segment n -> value n + 1, as MONAI Label's plugin exports it too
        spec = next(s for s in result.segments if s.name == name)
        assert np.array_equal(labels == value, result.labels == spec.label)


def test_a_saved_scene_loads_back_with_the_same_segments_rois_and_answer(module, app, sample, answers, tmp_path):
    result = answers["dicom"]
    logic, volume, segmentation = shown(module, app, sample, answers, "dicom")
    path = logic.save_scene(tmp_path / "scene" / "work.mrml")
    written = sorted(p.name for p in path.parent.iterdir())
    assert "work.mrml" in written and any(n.endswith(".seg.nrrd") for n in written)
    assert sum(n.endswith(".mrk.json") for n in written) == len(roi_specs(result, per_slice=True))

    reopened = SlicerApp()
    assert reopened.io_manager.load_scene(path)
    (loaded,) = nodes(reopened, "vtkMRMLSegmentationNode")
    (volume_again,) = [v for v in nodes(reopened, "vtkMRMLScalarVolumeNode")]
    assert np.allclose(ijk_to_ras(volume_again), ijk_to_ras(volume))
    segments, before = loaded.GetSegmentation(), segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == before.GetNumberOfSegments()
    for i in range(segments.GetNumberOfSegments()):
        segment_id = segments.GetNthSegmentID(i)
        assert segments.GetSegment(segment_id).GetName() == before.GetSegment(before.GetNthSegmentID(i)).GetName()
        assert segments.GetSegment(segment_id).GetTerminology() == before.GetSegment(before.GetNthSegmentID(i)).GetTerminology()
        assert np.array_equal(segment_mask(reopened, loaded, segment_id, volume_again), result.labels == result.segments[i].label)
    assert Answer.from_dict(json.loads(loaded.GetAttribute("MediSee.AnswerJSON"))) == result.response
    rois_before = {r.GetName(): r for r in nodes(app, "vtkMRMLMarkupsROINode")}
    rois_after = {r.GetName(): r for r in nodes(reopened, "vtkMRMLMarkupsROINode")}
    assert set(rois_after) == set(rois_before)
    for name, roi in rois_after.items():
        a, b = [0.0] * 3, [0.0] * 3
        roi.GetCenterWorld(a)
        rois_before[name].GetCenterWorld(b)
        assert np.allclose(a, b, atol=1e-4) and np.allclose(roi.GetSize(), rois_before[name].GetSize(), atol=1e-4)
        assert roi.GetAttribute("MediSee.Query") == result.query


def test_a_volume_goes_to_the_server_as_simpleitk_reads_it_and_comes_back_marked(module, app, sample, tmp_path):
    logic = module.MediSeeLogic(app.scene, app.segmentations_logic, app.volumes_logic)
    volume = load_volume(app, image_path(sample, "dicom"))
    image_id, upload = logic.server_copy(volume, "http://server")
    try:
        written, original = read_sitk(Path(upload)), read_sitk(image_path(sample, "dicom"))
        assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(original))
        assert np.allclose(sitk_ijk_to_ras(written), sitk_ijk_to_ras(original), atol=1e-3)
    finally:
        Path(upload).unlink()
    logic.mark_server_copy(volume, "http://server", image_id)
    assert logic.server_copy(volume, "http://server") == (image_id, None)  # known: nothing to upload
    assert logic.server_copy(volume, "http://other")[1] is not None
    loaded = logic.load_server_copy(image_path(sample, "brain"), "http://server", "brain-7")
    assert loaded.GetName() == "brain-7" and loaded.GetAttribute("MediSee.ImageId") == "brain-7"
    assert np.array_equal(array_of(loaded.GetImageData()), sitk.GetArrayFromImage(read_sitk(image_path(sample, "brain"))))
