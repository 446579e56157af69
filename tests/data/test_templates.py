import random

import pytest

from medisee.conversation import answer_prefix, parse_answer
from medisee.data import templates
from medisee.data.templates import absent_answer, grounded_answer, grouped_answer, named_answer


def test_grounded_answer_always_opens_canonically():
    assert grounded_answer("The liver makes bile.") == "Sure, it is [SEG] and [BBOX]. The liver makes bile."
    assert grounded_answer("  ") == answer_prefix(("[SEG]", "[BBOX]"))
    tokens = ("[A]", "[B]", "[C]")
    assert grounded_answer("Why.", tokens) == answer_prefix(tokens) + " Why."


def test_absent_answer_format_and_no_candidate_tokens():
    answer = absent_answer("liver", "The liver is not visible in this image.")
    assert answer == "No, there is no liver in this image. The liver is not visible in this image."
    with pytest.raises(ValueError, match="candidate token"):
        absent_answer("liver", "It is [SEG].")


@pytest.mark.parametrize("phrases", [["liver"], ["liver", "spleen"], ["left kidney", "right kidney", "aorta"]])
@pytest.mark.parametrize("tokens", [("[SEG]", "[BBOX]"), ("[SEG]",), ("[A]", "[B]", "[C]")])
def test_grouped_answer_parses_back(phrases, tokens):
    answer = grouped_answer(phrases, tokens)
    assert answer.startswith("Sure, <p>")
    assert parse_answer(answer, tokens).phrases == phrases
    assert parse_answer(answer, tokens).text == ", ".join(phrases) + "."


def test_grouped_answer_needs_a_phrase():
    with pytest.raises(ValueError):
        grouped_answer([])


def test_plain_templates():
    assert all("{class_name}" in t for t in (*templates.REFERRING_TEMPLATES, *templates.PLAIN_EXPLANATIONS))
    assert len(set(templates.REFERRING_TEMPLATES)) >= 6 and len(set(templates.REASONING_SUFFIXES)) >= 3
    assert templates.referring_query("liver", random.Random(1)) == templates.referring_query("liver", random.Random(1))
    assert "liver" in templates.plain_explanation("liver", random.Random(0))


def test_phrasing_ids_are_unique_and_splits_disjoint():
    phrasings = templates.REASONING_PHRASINGS + templates.VISUAL_PHRASINGS
    assert len({p.id for p in phrasings}) == len(phrasings)
    for group in (templates.REASONING_PHRASINGS, templates.VISUAL_PHRASINGS):
        train = templates.phrasings_for("train", group)
        test = templates.phrasings_for("test", group)
        assert templates.phrasings_for("val", group) == train
        assert not {p.id for p in train} & {p.id for p in test}
        assert len(test) >= 0.3 * len(group)
        # held-out phrasings are new wording, not new facts in an old sentence
        train_texts = {text for p in train for text in (p.long, p.short, p.explanation)}
        assert not train_texts & {text for p in test for text in (p.long, p.short, p.explanation)}
        # every facet can be asked in both splits
        assert {p.facet for p in train} == {p.facet for p in test}
    with pytest.raises(ValueError, match="split"):
        templates.phrasings_for("dev")


def test_phrasing_fields():
    phrasing = templates.REASONING_PHRASINGS[0]
    assert {"kind", "fact", "fact2", "name"} <= phrasing.fields
    assert phrasing.orientation == "attribute"


def test_visual_prompt_text():
    assert templates.prompt_region(box=(0.1, 0.2, 0.345, 0.5)) == "the drawn box"
    assert templates.prompt_region(point=(0.5, 0.25)) == "the clicked point"
    with pytest.raises(ValueError):
        templates.prompt_region()


def test_named_answer_opens_with_its_group_then_explains():
    assert named_answer("liver", " The liver makes bile. ") == "Sure, <p>liver</p> [SEG] and [BBOX]. The liver makes bile."
    assert named_answer("liver", "") == grouped_answer(["liver"])
