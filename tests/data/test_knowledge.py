import re

import pytest

from medisee.data.catalogue import catalogue
from medisee.data.knowledge import find_structure, load_knowledge, normalise

KNOWLEDGE = load_knowledge()


def mentions(text: str, term: str) -> bool:
    return re.search(rf"\b{re.escape(term)}\b", text, re.IGNORECASE) is not None


def all_texts(structure):
    yield from structure.function
    yield from (loc.text for loc in structure.location)
    yield from (fact for facts in structure.appearance.values() for fact in facts)
    for finding in structure.findings:
        yield finding.clue
        yield finding.phrase


@pytest.mark.parametrize("modality, name", [(m, entry.name) for entry in catalogue() for m in entry.modalities])
def test_every_catalogue_structure_is_rich(modality, name):
    structure = KNOWLEDGE[name]
    assert modality in structure.modalities and structure.region in ("abdomen", "thorax", "brain", "spine")
    assert structure.synonyms and structure.kind
    assert 2 <= len(structure.function) <= 4
    assert len(structure.general_location) >= 2 and len(structure.location) >= 4
    assert len(structure.appearance[modality]) >= 3
    assert len(structure.findings) >= 3


@pytest.mark.parametrize("name", sorted(KNOWLEDGE))
def test_facts_never_name_their_own_structure(name):
    structure = KNOWLEDGE[name]
    for text in all_texts(structure):
        for term in structure.terms:
            assert not mentions(text, term), (name, term, text)


@pytest.mark.parametrize("name", sorted(KNOWLEDGE))
def test_location_statements_name_exactly_their_anchors(name):
    for loc in KNOWLEDGE[name].location:
        for other in KNOWLEDGE.values():
            named = any(mentions(loc.text, term) for term in other.terms)
            assert named == (other.name in loc.anchors), (name, other.name, loc.text)


def test_patient_sides_are_stated_for_paired_organs():
    assert any("patient's left" in loc.text for loc in KNOWLEDGE["left kidney"].location)
    assert any("patient's right" in loc.text for loc in KNOWLEDGE["right kidney"].location)
    assert any("viewer's right" in text for text in KNOWLEDGE["left lung"].general_location)


def test_text_is_ascii():
    for structure in KNOWLEDGE.values():
        for text in (*all_texts(structure), *structure.terms, *(f.condition for f in structure.findings)):
            assert text.isascii(), text


def test_find_structure_accepts_dataset_spellings():
    assert find_structure("Kidney_Left").name == "left kidney"
    assert find_structure("  LEFT   kidney ").name == "left kidney"
    assert find_structure("gray matter").name == "grey matter"
    assert find_structure("gallbladder") is None
    assert normalise("Lung_Right") == "lung right"


def test_load_knowledge_returns_a_fresh_dict():
    first = load_knowledge()
    first.pop("liver")
    assert "liver" in load_knowledge()
