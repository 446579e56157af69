"""The answer's one typed definition: the Slicer library's mirror is the same file, answers round-trip
through JSON, and a reader refuses what it cannot read with the field's name."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from medisee.answer import SCHEMA_VERSION, Answer, AnswerFormatError, Entity, OutputFiles, SliceAnswer, SliceFinding
from medisee.answer import schema

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT / "MediSeeSlicer" / "MediSeeLib" / "answer.py"


def mirror_module():
    spec = importlib.util.spec_from_file_location("medisee_lib_answer", MIRROR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the classes are made
    spec.loader.exec_module(module)
    return module


def answer(**changes) -> Answer:
    liver = Entity(1, "liver", 0.9, {"3": SliceFinding([1.0, 2.0, 30.5, 40.0], 0.9, 0.8, 120),
                                     "4": SliceFinding([2.0, 2.0, 31.0, 41.0], 0.7, 0.75, 110)})
    fields = dict(schema_version=SCHEMA_VERSION, query="Where is the liver?", mode="fast", model="default",
                  answer="Sure, it is the liver.", answers=[SliceAnswer(3, "Sure."), SliceAnswer(4, "")], axis="axial",
                  slices=[3, 4], label_names={"liver": 1}, entities=[liver], image_shape=[8, 64, 64],
                  spacing=[0.8, 0.8, 2.5], origin=[-10.0, 5.0, 30.0], direction=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                  timing={"total_s": 1.25})
    return Answer(**(fields | changes))


def test_the_slicer_librarys_mirror_is_the_same_file():
    assert MIRROR.read_text() == Path(schema.__file__).read_text(), \
        "MediSeeLib/answer.py must be a copy of medisee/answer/schema.py: cp medisee/answer/schema.py MediSeeSlicer/MediSeeLib/answer.py"


def test_the_mirror_reads_what_the_library_writes_into_the_same_fields():
    mirror = mirror_module()
    written = answer(files=OutputFiles("labels.nii.gz", "overlay.png", 3, {"1": "mask-1-liver.nii.gz"}))
    read = mirror.Answer.from_dict(json.loads(json.dumps(written.to_dict())))
    assert dataclasses.asdict(read) == dataclasses.asdict(written)
    for ours, theirs in [(Answer, mirror.Answer), (Entity, mirror.Entity), (SliceFinding, mirror.SliceFinding)]:
        assert [(f.name, f.type) for f in dataclasses.fields(ours)] == [(f.name, f.type) for f in dataclasses.fields(theirs)]


def test_label_names_follow_monai_labels_convention_and_unset_options_are_left_out():
    data = answer().to_dict()
    assert data["label_names"] == {"liver": 1} and data["schema_version"] == 1
    assert "files" not in data and "image" not in data and data["answers"][0] == {"slice": 3, "answer": "Sure."}
    assert data["entities"][0]["slices"]["3"] == {"box": [1.0, 2.0, 30.5, 40.0], "score": 0.9, "mask_quality": 0.8, "pixels": 120}


def test_unknown_fields_are_ignored_so_an_optional_addition_keeps_the_version():
    data = answer().to_dict()
    data["entities"][0]["volume_ml"] = 1510.2
    data["something_new"] = {"any": "thing"}
    assert Answer.from_dict(data) == answer()


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("label_names"), "answer: the field 'label_names' is missing"),
    (lambda d: d["entities"][0]["slices"]["3"].update(box="1,2,3,4"), r"answer.entities\[0\].slices\['3'\].box: expected a list"),
    (lambda d: d.update(label_names={"liver": "1"}), r"answer.label_names\['liver'\]: expected int, got '1'"),
    (lambda d: d.update(slices=[True]), r"answer.slices\[0\]: expected int, got True"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this reader's"),
])
def test_a_wrong_answer_is_refused_naming_the_field(change, message):
    data = answer().to_dict()
    change(data)
    with pytest.raises(AnswerFormatError, match=message):
        Answer.from_dict(data)


def test_whole_numbers_are_read_as_floats_where_floats_are_meant():
    data = answer().to_dict()
    data["spacing"] = [1, 1, 3]
    assert Answer.from_dict(data).spacing == [1.0, 1.0, 3.0]
