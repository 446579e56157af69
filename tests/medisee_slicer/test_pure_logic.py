"""MediSeeLib's pure parts: slice bookkeeping, prompts, terminology, install planning, multipart parsing."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from MediSeeLib.errors import EmptyQuery, OutsideVolume, ServerFailed
from MediSeeLib.geometry import Geometry
from MediSeeLib.install import canonical, device_choice, plan_install, read_requirements
from MediSeeLib.jobs import BackgroundCall, PanelCalls
from MediSeeLib.local_server import serve_command
from MediSeeLib.multipart import parse_infer_response
from MediSeeLib.scope import (Scope, box_prompt, panel_request, parse_history, point_prompt, remember, request_params,
                              slice_index_at, view_axis)
from MediSeeLib.results import PALETTE, segment_colours
from MediSeeLib.terminology import code_for, colour_for, terminology_entry
from MediSeeLib.workflow import image_id_for, models_text


# a sagittally stored, oblique-free volume: numpy (k, j, i) with i along A-P, j along S-I, k along L-R
SAGITTAL = Geometry(shape=(20, 64, 48), spacing=(1.0, 2.0, 3.0), origin=(10.0, -20.0, 30.0),
                    direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
AXIAL = Geometry(shape=(8, 96, 96), spacing=(3.0, 3.0, 25.0), origin=(-120.0, -130.0, 40.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_slice_axes_follow_the_direction_matrix():
    assert [AXIAL.slice_axis(a) for a in ("axial", "coronal", "sagittal")] == [0, 1, 2]
    assert [SAGITTAL.slice_axis(a) for a in ("axial", "coronal", "sagittal")] == [1, 2, 0]
    assert SAGITTAL.num_slices("axial") == 64 and SAGITTAL.plane_axes("coronal") == (2, 0, 1)


def test_ijk_and_ras_are_inverse():
    ijk = np.array([[0, 0, 0], [47, 63, 19], [3.5, 10.25, 7]])
    assert np.allclose(SAGITTAL.to_ijk(SAGITTAL.to_ras(ijk)), ijk)
    assert np.allclose(AXIAL.to_ras([0, 0, 0]), [120.0, 130.0, 40.0])


def test_a_slicer_volume_matrix_gives_back_the_same_geometry():
    again = Geometry.from_ijk_to_ras(SAGITTAL.ijk_to_ras(), SAGITTAL.shape)
    assert again.shape == SAGITTAL.shape and np.allclose(again.ijk_to_ras(), SAGITTAL.ijk_to_ras())
    assert np.allclose(again.spacing, SAGITTAL.spacing) and np.allclose(again.origin, SAGITTAL.origin)


def test_the_current_slice_is_the_one_through_the_views_plane():
    ras = AXIAL.to_ras([10, 20, 5.3])
    assert slice_index_at(AXIAL, "axial", ras) == 5
    assert slice_index_at(AXIAL, "coronal", ras) == 20 and slice_index_at(AXIAL, "sagittal", ras) == 10
    with pytest.raises(OutsideVolume):
        slice_index_at(AXIAL, "axial", AXIAL.to_ras([10, 20, 9]))
    assert view_axis("Coronal") == "coronal" and view_axis("Reformat") == "axial"


def test_scopes_become_the_servers_slice_parameter():
    assert Scope("slice", "axial", 3).slice_param() == 3
    assert Scope("range", "coronal", 9, 4).slice_param() == "4-9"
    assert Scope("all").slice_param() == "all"
    params = request_params(" liver? ", Scope("slice", "sagittal", 2), box=[1, 2, 3, 4], prompt_slice=2, mode="fast")
    assert params == {"query": "liver?", "slice": 2, "axis": "sagittal", "box": [1, 2, 3, 4], "prompt_slice": 2, "mode": "fast"}
    assert "prompt_slice" not in request_params("liver?", Scope("all"), prompt_slice=3)


def test_prompts_map_from_ras_to_the_slice_plane():
    corners = AXIAL.to_ras(np.array([[x, y, z] for x in (9.5, 29.5) for y in (19.5, 49.5) for z in (2, 3)]))
    assert box_prompt(AXIAL, "axial", corners) == [10.0, 20.0, 30.0, 50.0]
    assert box_prompt(AXIAL, "coronal", corners) == [10.0, 2.5, 30.0, 3.5]  # coronal rows are k, columns i
    assert point_prompt(AXIAL, "axial", AXIAL.to_ras([12, 40, 6])) == ([12.5, 40.5], 6)
    with pytest.raises(OutsideVolume):
        point_prompt(AXIAL, "axial", AXIAL.to_ras([200, 40, 6]))
    with pytest.raises(OutsideVolume):
        box_prompt(AXIAL, "axial", AXIAL.to_ras(np.array([[200, 0, 0], [300, 10, 0]])))


def test_query_history_keeps_recent_distinct_queries():
    history = remember(["b", "a"], "a")
    assert history == ["a", "b"] and len(remember([str(i) for i in range(30)], "new")) == 20


def test_known_structures_get_their_snomed_code():
    assert code_for("the right kidney").value == "9846003" and code_for("Liver").value == "10200004"
    assert code_for("left lungs").value == "44029006" and code_for("a tumour") is None
    assert code_for("vertebra") is None  # not listed until checked
    entry = terminology_entry(code_for("spleen"))
    assert "SCT^123037004^Anatomical Structure~SCT^78961009^Spleen~" in entry


def test_a_catalogue_structure_keeps_its_colour_and_other_phrases_take_the_palette():
    liver = colour_for("liver")
    assert liver == colour_for("The Liver") and liver != colour_for("spleen") and colour_for("a tumour") is None
    colours = segment_colours({1: "spleen", 2: "liver", 3: "a tumour", 4: "liver lesion"})
    assert colours[2] == liver and colours[1] == colour_for("spleen")
    assert colours[3] == PALETTE[2] and colours[4] == PALETTE[3]  # outside the catalogue; liver's colour is taken
    assert segment_colours({7: "liver"})[7] == liver  # whatever the label value


def test_the_install_plan_never_replaces_what_slicer_ships():
    requirements = ["# comment", "numpy==2.4.6", "SimpleITK==2.5.7", "monailabel==0.8.5", "torch==2.13.0", "-e .", "medisee==0.1"]
    plan = plan_install(requirements, installed={"NumPy", "simpleitk", "requests"}, source="/src/medisee")
    assert plan.install == ["monailabel==0.8.5", "torch==2.13.0"] and plan.kept == ["numpy", "simpleitk"]
    assert plan.pip_command("PythonSlicer") == ["PythonSlicer", "-m", "pip", "install", "--no-deps", "monailabel==0.8.5",
                                                "torch==2.13.0", "/src/medisee"]
    assert "2 package(s)" in plan.summary() and canonical("Requests_Toolbelt") == "requests-toolbelt"
    lock = read_requirements(Path(__file__).resolve().parents[2] / "requirements.lock")
    assert "monailabel==0.8.5" in lock and not any(line.startswith("#") for line in lock)
    # Slicer's own libraries (as pip packages, for the tests' real MRML) stay out of what goes into Slicer's Python
    assert not {canonical(line.split("==")[0]) for line in lock} & {"vtk", "slicer-core", "trame-slicer", "slicer-layer-dm"}


def test_the_device_message_says_cpu_or_gpu():
    assert device_choice(True)[0] == "auto" and "GPU was found" in device_choice(True)[1]
    assert device_choice(False) == ("cpu", device_choice(False)[1]) and "CPU model" in device_choice(False)[1]


ANSWER = {"schema_version": 1, "query": "liver?", "mode": "fast", "model": "default", "answer": "Sure", "answers": [],
          "axis": "axial", "slices": [3], "label_names": {"liver": 1}, "entities": [], "image_shape": [8, 96, 96],
          "spacing": [3, 3, 25], "origin": [0, 0, 0], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1], "timing": {}}


def test_a_multipart_answer_is_split_into_json_and_label():
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"params\"\r\nContent-Type: application/json\r\n\r\n"
            + json.dumps(ANSWER).encode() + b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
            b"filename=\"labels.nii.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8b\x00\r\n\x01\r\n--XyZ--\r\n")
    answer = parse_infer_response(body, "multipart/form-data; boundary=XyZ")
    assert answer.result.answer == "Sure" and answer.result.label_names == {"liver": 1} and answer.result.spacing == [3.0, 3.0, 25.0]
    assert answer.label == b"\x1f\x8b\x00\r\n\x01" and answer.label_name == "labels.nii.gz"


def test_an_answer_the_module_cannot_read_is_a_server_failure_naming_the_field():
    with pytest.raises(ServerFailed, match="cannot read.*label_names.*missing"):
        parse_infer_response(json.dumps({k: v for k, v in ANSWER.items() if k != "label_names"}).encode(), "application/json")
    with pytest.raises(ServerFailed, match="newer than this reader"):
        parse_infer_response(json.dumps(ANSWER | {"schema_version": 99}).encode(), "application/json")


def test_the_panel_request_puts_box_and_point_prompts_on_their_slice():
    corners = AXIAL.to_ras(np.array([[x, y, z] for x in (9.5, 29.5) for y in (19.5, 49.5) for z in (2, 3)]))
    params = panel_request(AXIAL, "liver?", Scope("all", "axial"), roi_corners=corners)
    assert params == {"query": "liver?", "slice": "all", "axis": "axial", "box": [10.0, 20.0, 30.0, 50.0], "prompt_slice": 2}
    params = panel_request(AXIAL, "liver?", Scope("slice", "axial", 6), point_ras=AXIAL.to_ras([12, 40, 6]))
    assert params["point"] == [12.5, 40.5] and params["prompt_slice"] == 6
    assert parse_history('["a", "b"]') == ["a", "b"] and parse_history("{broken") == [] and parse_history(None) == []


def test_the_panel_texts_name_the_segments_and_the_models():
    info = {"models": {"medisee": {"medisee": {"device": "cpu", "precision": "fp32"}}, "medisee_segment": {}}}
    assert models_text(info) == "medisee (cpu, fp32); also: medisee_segment"


def test_panel_calls_hand_values_to_the_main_thread_and_errors_as_one_line():
    errors, busy, values = [], [], []
    calls = PanelCalls(on_error=errors.append, on_busy=busy.append)
    assert calls.start(lambda: (time.sleep(0.05), 7)[1], values.append)
    assert not calls.start(lambda: 1, values.append)  # one at a time
    calls.call.wait(5)
    calls.poll()
    assert values == [7] and busy == [True, False]
    calls.start(lambda: (_ for _ in ()).throw(EmptyQuery()), values.append)
    calls.call.wait(5)
    calls.poll()
    calls.start(lambda: 1 / 0, values.append)
    calls.call.wait(5)
    calls.poll()
    assert "question is empty" in errors[0] and errors[1].startswith("Unexpected error: division by zero")


def test_a_background_call_hands_back_its_value_or_its_error():
    call = BackgroundCall(lambda: (time.sleep(0.05), 42)[1])
    assert call.wait(5) and call.result() == 42
    failing = BackgroundCall(lambda: 1 / 0)
    failing.wait(5)
    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_volume_names_become_valid_datastore_ids():
    assert image_id_for("CT Chest (1)-vtkMRMLScalarVolumeNode1") == "CT-Chest-1-vtkMRMLScalarVolumeNode1"
    assert image_id_for("///") == "slicer-volume" and len(image_id_for("x" * 300)) == 128


def test_the_local_server_command_serves_a_folder_or_the_sample_study():
    assert serve_command("py", "/data", 8001, [("device", "cpu")]) == [
        "py", "-m", "monailabel_app.serve", "--host", "127.0.0.1", "--port", "8001", "--studies", "/data", "--conf", "device", "cpu"]
    assert serve_command("py", None, 8001, sample_dir="/home/u/.medisee")[-2:] == ["--sample-dir", "/home/u/.medisee"]


def test_a_volume_answer_gives_one_3d_roi_per_structure_around_its_voxels():
    """The server's RAS bounds of a structure (medisee.volume) and the ROI the module draws agree,
    on an oblique, anisotropic volume; the panel shows the structure's mL and extent."""
    from medisee.imaging import MedicalImage
    from medisee.volume import volume_entities
    from MediSeeLib.answer import Answer, Structure
    from MediSeeLib.results import InferenceResult, answer_text, roi_specs

    angle = 0.4
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    image = MedicalImage(np.zeros((10, 16, 20), np.int16), (0.7, 0.9, 4.0), (12.0, -30.0, 5.0), direction)
    labels = np.zeros(image.shape, np.uint8)
    labels[3:7, 2:9, 5:15] = 1
    (liver,) = volume_entities(labels, {1: "liver"}, [], image, "axial")
    answer = Answer.from_dict(ANSWER | {
        "image_shape": list(image.shape), "spacing": list(image.spacing), "origin": list(image.origin),
        "direction": list(direction), "structures": [dataclasses.asdict(Structure(**dataclasses.asdict(liver)))]})
    result = InferenceResult(answer.query, answer.answer, "axial", answer.slices, Geometry.from_answer(answer), labels,
                             response=answer)
    (roi,) = roi_specs(result, per_slice=False)
    corners = roi.corners()
    assert (roi.name, roi.label, roi.slice) == ("liver", 1, None)
    assert [*corners.min(axis=0), *corners.max(axis=0)] == pytest.approx(liver.bounds_ras, abs=1e-3)
    assert f"liver: {liver.volume_ml:.1f} mL, slices 3-6 (axial)" in answer_text(result)


def test_the_window_presets_come_from_the_server_and_reach_the_request():
    """A preset added to medisee.imaging.CT_WINDOWS reaches the panel through /info/ and goes back as `window`."""
    from medisee.imaging import CT_WINDOWS
    from MediSeeLib.workflow import AUTOMATIC_WINDOW, window_choices

    info = {"models": {"medisee": {"medisee": {"windows": {name: list(v) for name, v in CT_WINDOWS.items()}}}}}
    assert window_choices(info) == [AUTOMATIC_WINDOW, *sorted(CT_WINDOWS)]
    assert window_choices({}) == [AUTOMATIC_WINDOW]
    assert request_params("liver?", Scope("all", "axial"), window="lung")["window"] == "lung"
    assert "window" not in request_params("liver?", Scope("all", "axial"))
