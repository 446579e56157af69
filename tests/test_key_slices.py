"""Ask once, segment everywhere: key slices where the asked structures are, and the bundled
model's volume answers on the sample CT (one liver, its mL, a drawn box followed)."""

from __future__ import annotations

import numpy as np
import pytest

from medisee.data.demo.sample_study import sample_phantom
from medisee.key_slices import choose_key_slices, key_slice_count
from medisee.metrics import mask_dice, mask_to_box
from medisee.models import load_model
from medisee.predictor import Prediction, Predictor
from medisee.study import StudyQuestion, ask_study


def test_key_slices_crowd_where_the_asked_structures_are():
    relevance = np.zeros(40)
    relevance[20:30] = 1.0
    keys = choose_key_slices(relevance, 4)
    assert len(keys) == 4 and keys == sorted(set(keys))
    assert sum(20 <= k < 30 for k in keys) >= 3
    assert choose_key_slices(np.ones(40), 4) == [4, 14, 24, 34]
    assert choose_key_slices(np.zeros(5), 3) == [0, 2, 4]  # nothing relevant: evenly spread


def test_key_slice_count_grows_with_the_volume():
    assert [key_slice_count(n) for n in (2, 3, 10, 40, 64, 116)] == [2, 3, 3, 4, 7, 12]


@pytest.fixture(scope="module")
def sample():
    phantom = sample_phantom(0)
    return Predictor(load_model("default").bundle), phantom.to_medical_image(), phantom.masks


@pytest.mark.slow
def test_segment_the_liver_over_the_sample_ct_gives_one_liver_of_the_right_volume(sample):
    predictor, image, masks = sample
    study = ask_study(predictor, image, StudyQuestion("Segment the liver.", slices="all", mode="full"))
    (liver,) = study.volume_entities
    truth = masks["liver"]
    true_ml = truth.sum() * np.prod(image.spacing) / 1000
    assert liver.phrase == "liver" and study.label_names == {liver.label: "liver"}
    assert abs(liver.volume_ml - true_ml) <= 0.10 * true_ml
    on = np.nonzero(truth.any(axis=(1, 2)))[0]
    assert abs(liver.first_slice - on[0]) <= 2 and abs(liver.last_slice - on[-1]) <= 2  # the patch head sees its edges
    assert mask_dice(study.labels == liver.label, truth) >= 0.8
    assert {e["phrase"] for e in study.entities} == {"liver"}
    assert "liver" in study.answer.lower()


@pytest.mark.slow
def test_a_box_drawn_on_one_slice_follows_its_structure_through_the_volume(sample):
    predictor, image, masks = sample
    truth = masks["liver"]
    middle = int(np.nonzero(truth.any(axis=(1, 2)))[0].mean())
    box = mask_to_box(truth[middle])
    study = ask_study(predictor, image, StudyQuestion("what is this?", slices="all", mode="full", box=box,
                                                      prompt_slice=middle))
    assert [v.phrase for v in study.volume_entities] == ["liver"]
    (liver,) = study.volume_entities
    assert liver.slice_count >= 0.8 * truth.any(axis=(1, 2)).sum()
    assert mask_dice(study.labels == liver.label, truth) >= 0.75


@pytest.mark.slow
def test_a_key_slice_that_misreads_the_question_still_gets_the_structure(sample, monkeypatch):
    """The vote decides what the volume holds; one key slice's misreading (its answer names
    nothing) does not cut the structure there."""
    predictor, image, masks = sample
    on = np.nonzero(masks["liver"].any(axis=(1, 2)))[0].tolist()
    read = predictor.predict_slices
    missed: list[int] = []

    def misread_one(planes, query, **kwargs):
        answers = read(planes, query, **kwargs)
        found = [i for i, a in enumerate(answers) if any(e.phrase == "liver" for e in a.entities)]
        answers[found[-1]] = Prediction("No, there is no liver in this image.", [])
        missed.append(found[-1])
        return answers

    monkeypatch.setattr(predictor, "predict_slices", misread_one)
    study = ask_study(predictor, image, StudyQuestion("Segment the liver.", slices="all", mode="full"))
    (liver,) = study.volume_entities
    (misread,) = [a.slice_index for a in study.slice_answers if a.answer.startswith("No, there is no liver")]
    assert missed and (study.labels[misread] == liver.label).sum() >= 0.8 * masks["liver"][misread].sum()
    assert liver.first_slice <= on[0] + 2 and liver.last_slice >= on[-1] - 2
    assert mask_dice(study.labels == liver.label, masks["liver"]) >= 0.8
