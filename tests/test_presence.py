"""The presence check's arithmetic and how a phrase picks the structure it checks."""

from __future__ import annotations

import pytest
import torch

from medisee.presence import expected_presence, named_class, phrase_presence, structure_presence

CLASSES = ("liver", "left kidney", "spleen")


def test_structure_presence_is_each_structures_highest_cell():
    probs = torch.tensor([[[0.1, 0.9, 0.0], [0.7, 0.2, 0.0]]])  # one image, two cells, three structures
    assert structure_presence(probs).tolist() == [[pytest.approx(0.7), pytest.approx(0.9), 0.0]]


def test_expected_presence_weighs_each_structure_by_how_the_model_names_it():
    # names: liver 3/4, left kidney 1/4 (log-probabilities up to a constant), spleen never
    log_probs = torch.log(torch.tensor([[0.75, 0.25, 1e-30]])) + 5.0
    presence = torch.tensor([[0.0, 1.0, 1.0]])
    assert expected_presence(log_probs, presence).item() == pytest.approx(0.25)
    assert expected_presence(log_probs, torch.ones(1, 3)).item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("phrase", "index"),
    [("Liver", 0), ("left kidney", 1), ("The marked structure is the left kidney; it filters", 1),
     ("aorta", None), ("", None)],
)
def test_a_phrase_names_a_patch_class_itself_or_in_its_text(phrase, index):
    assert named_class(phrase, CLASSES) == index


def test_structures_outside_the_patch_classes_are_not_checked():
    presence = torch.tensor([0.05, 0.5, 0.9])
    assert phrase_presence("the liver", CLASSES, presence) == pytest.approx(0.05)
    assert phrase_presence("aorta", CLASSES, presence) == 1.0
