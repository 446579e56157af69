"""One question about a study: slice specs, prompts on their own slice, aligned labels."""

from __future__ import annotations

import numpy as np
import pytest

from medisee.answer import build_answer
from medisee.imaging import MedicalImage
from medisee.predictor import PredictionInputError, Predictor
from medisee.study import StudyQuestion, ask_study, parse_slices, parse_window


@pytest.fixture
def volume() -> MedicalImage:
    rng = np.random.default_rng(3)
    array = (rng.normal(40, 300, (6, 40, 48))).astype(np.int16)
    return MedicalImage(array, (0.8, 0.8, 2.5), (-10.0, 5.0, 30.0), tuple(np.eye(3).ravel()), modality="CT")


@pytest.mark.parametrize("spec,expected", [(None, [3]), ("", [3]), (2, [2]), ("1-3", [1, 2, 3]), ("all", list(range(6)))])
def test_slice_specs(spec, expected):
    assert parse_slices(spec, 6) == expected


@pytest.mark.parametrize("spec,message", [("6", "out of range"), ("-1", "out of range"), ("4-2", "reversed"),
                                          ("some", "N, A-B or all"), (True, "N, A-B or all"), (2.5, "N, A-B or all")])
def test_bad_slice_specs(spec, message):
    with pytest.raises(PredictionInputError, match=message):
        parse_slices(spec, 6)


def test_windows():
    assert parse_window("abdomen") == "abdomen" and parse_window("40,400") == (40.0, 400.0)
    assert parse_window([50, 350]) == (50.0, 350.0)
    assert parse_window("Lung ") == "lung"
    for bad in ("40,0", "a,b", [1, 2, 3], [float("nan"), float("nan")], "40,inf"):
        with pytest.raises(PredictionInputError, match="LEVEL,WIDTH"):
            parse_window(bad)
    with pytest.raises(PredictionInputError, match="unknown window 'disco'; presets: abdomen"):
        parse_window("disco")


def test_answers_are_aligned_and_summarised_per_entity(tiny_shared, volume):
    predictor = Predictor(tiny_shared, score_threshold=0.0)
    study = ask_study(predictor, volume, StudyQuestion("where is the liver?", slices="1-3", mode="fast"))
    assert study.slices == [1, 2, 3] and study.labels.shape == volume.shape
    assert [p.slice_index for p in study.predictions] == [1, 2, 3]
    assert not study.labels[[0, 4, 5]].any()
    answer = build_answer(study, volume, query=" where is the liver? ", mode="fast", model="tiny")
    (structure,) = answer.structures  # several slices of a volume: one entity per structure, measured
    assert answer.slices == [1, 2, 3] and answer.label_names == {"liver": 1}  # the structure, not the whole query
    assert structure.phrase == "liver" and structure.voxels == int((study.labels == 1).sum())
    assert answer.query == "where is the liver?" and answer.image_shape == [6, 40, 48] and answer.spacing == [0.8, 0.8, 2.5]
    (entity,) = answer.entities
    assert set(entity.slices) <= {"1", "2", "3"} and entity.score == max(s.score for s in entity.slices.values())
    for index, found in entity.slices.items():
        assert found.pixels == int((study.labels[int(index)] == 1).sum())
    assert [a.slice for a in answer.answers] == [1, 2, 3] and set(answer.timing) >= {"total_s", "infer_s"}


def test_with_every_slice_read_a_prompt_applies_only_to_the_slice_it_was_drawn_on(tiny_shared, volume):
    predictor = Predictor(tiny_shared, score_threshold=0.0)
    box = (4.0, 4.0, 20.0, 20.0)
    plain = ask_study(predictor, volume, StudyQuestion("what is here?", slices="all", mode="fast", language_slices="every"))
    prompted = ask_study(predictor, volume, StudyQuestion("what is here?", slices="all", box=box, prompt_slice=2,
                                                          mode="fast", language_slices="every"))
    for index, (a, b) in enumerate(zip(plain.slice_answers, prompted.slice_answers)):
        same = np.array_equal(a.entities[0].mask, b.entities[0].mask)
        assert same == (index != 2), f"slice {index}"
    with pytest.raises(PredictionInputError, match="drawn on slice 5"):
        ask_study(predictor, volume, StudyQuestion("what?", slices="0-2", box=box, prompt_slice=5))


def test_unknown_language_slices_are_refused(tiny_shared, volume):
    with pytest.raises(PredictionInputError, match="unknown language_slices 'some'; choose one of: key, every"):
        ask_study(Predictor(tiny_shared), volume, StudyQuestion("what?", slices="all", language_slices="some"))


def test_a_2d_image_has_only_axial_slices(tiny_shared):
    image = MedicalImage(np.zeros((32, 32), np.uint8), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    with pytest.raises(PredictionInputError, match="2D image"):
        ask_study(Predictor(tiny_shared), image, StudyQuestion("what?", axis="coronal"))
