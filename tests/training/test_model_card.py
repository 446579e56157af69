"""The model card leads with the people's questions, against issue 18's goals."""

from __future__ import annotations

from training import model_card


def groups(**values) -> dict:
    base = {
        "overall": {"giou": 0.6, "box_acc": 0.7, "named_rate": 0.8, "count": 10},
        "explicit": {"giou": 0.7, "box_acc": 0.8, "named_rate": 0.9, "count": 5},
        "modality CT": {"giou": 0.56, "box_acc": 0.61, "count": 6},
        "modality MR": {"giou": 0.61, "box_acc": 0.9, "count": 4},
        "nothing": {"absence_rate": 0.86, "absent_count": 20},
        "multi": {"all_returned_rate": 0.71, "all_named_rate": 0.8, "multi_count": 7},
    }
    for key, value in values.items():
        group, metric = key.split("__")
        base[group.replace("_", " ")][metric] = value
    return {"groups": base, "agreement": {"rate": 0.99, "count": 30}, "repeated_words": {"rate": 0.0, "count": 30}}


GENERATOR = {"mode": "fast", "by_modality": {"CT": {"overall": {"giou": 0.7, "box_acc": 0.8, "count": 9}}},
             "overall": {}, "by_class": {}}


def test_the_card_opens_with_the_people_table_and_says_which_goals_are_met():
    card = model_card.render(GENERATOR, {"seed": 0}, "cmd", human=groups(), human_fast=groups())
    first_section = card.split("## ")[1]
    assert first_section.startswith("Questions people wrote")
    assert "| explicit requests | 70.0 (70.0) | 80.0 (80.0) | 90.0 |" in first_section
    assert "| the generator's phrasings, CT (fast mode) | 70.0 | 80.0 |" in first_section
    assert "all met." in first_section
    missed = model_card.render(GENERATOR, {}, "cmd", human=groups(multi__all_returned_rate=0.4))
    assert "**not met**: multi all_returned_rate 40.0 < 70.0." in missed
