"""The catalogue is the one list of structures: everything that lists them derives from it or
is checked against it here, so a structure missing anywhere it must be fails a test."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from medisee.data import catalogue
from medisee.data.demo import brain, ct_phantom
from medisee.data.knowledge import find_structure, join, load_knowledge, normalise, paired_structures
from medisee.models import default_model_dir

ROOT = Path(__file__).resolve().parents[2]
RAW = json.loads(ROOT.joinpath("medisee/data/catalogue.json").read_text(encoding="utf-8"))
KNOWLEDGE_FACTS = json.loads(ROOT.joinpath("medisee/data/knowledge/knowledge.json").read_text(encoding="utf-8"))
NAMES = catalogue.names()


def test_every_structure_has_knowledge_and_every_fact_a_structure():
    assert set(load_knowledge()) == set(NAMES)
    with pytest.raises(ValueError, match=r"no facts for the catalogue's \['spleen'\]"):
        join(catalogue.catalogue(), [f for f in KNOWLEDGE_FACTS["structures"] if f["name"] != "spleen"])
    stray = {**KNOWLEDGE_FACTS["structures"][0], "name": "gallbladder"}
    with pytest.raises(ValueError, match="'gallbladder' is not in the catalogue"):
        join(catalogue.catalogue(), [*KNOWLEDGE_FACTS["structures"], stray])


def test_the_knowledge_base_takes_names_synonyms_region_and_modalities_from_the_catalogue():
    knowledge = load_knowledge()
    for entry in catalogue.catalogue():
        structure = knowledge[entry.name]
        assert (structure.synonyms, structure.informal, structure.region, structure.modalities) == (
            entry.synonyms, entry.informal, entry.region, entry.modalities)


def test_no_two_structures_share_a_name_or_synonym():
    terms = [normalise(term) for entry in catalogue.catalogue() for term in (entry.name, *entry.synonyms)]
    assert len(terms) == len(set(terms))
    assert all(find_structure(term).name == entry.name for entry in catalogue.catalogue() for term in entry.synonyms)


def test_laterality_matches_the_name_and_pairs_join_the_two_sides():
    for entry in catalogue.catalogue():
        side = entry.name.split()[0]
        assert entry.laterality == (side if side in catalogue.LATERALITIES else None), entry.name
    lateral = {entry.name for entry in catalogue.catalogue() if entry.laterality}
    assert {name for pair in catalogue.pairs() for name in (pair.left, pair.right)} == lateral
    assert paired_structures() == {"kidney": ("left kidney", "right kidney"), "lung": ("left lung", "right lung")}


def test_the_phantoms_draw_exactly_the_structures_the_catalogue_gives_them():
    drawn = set(catalogue.drawn_by("ct_phantom")) | set(catalogue.drawn_by("mni152_brain"))
    assert drawn == set(NAMES)
    assert ct_phantom.CT_STRUCTURES == catalogue.drawn_by("ct_phantom")
    assert tuple(ct_phantom.generate_phantom(3, shape=(12, 64, 64), spacing=(5.0, 5.0, 15.0)).masks) == ct_phantom.CT_STRUCTURES
    assert set(ct_phantom.PRIORITY) == set(ct_phantom.CT_STRUCTURES)
    labels = np.arange(5, dtype=np.uint8).reshape(1, 1, 5)
    masks = brain._masks_from_labels(labels)
    assert tuple(masks) == brain.BRAIN_STRUCTURES == catalogue.drawn_by("mni152_brain")
    assert all(masks[name].any() for name in masks)


def test_ct_structures_point_at_the_phantom_tissues_their_hounsfield_units_come_from():
    for entry in catalogue.catalogue():
        if entry.phantom.generator == "ct_phantom":
            assert entry.phantom.tissues and "CT" in entry.modalities, entry.name
            for phase in ct_phantom.PHASES:
                assert set(entry.phantom.tissues) <= set(ct_phantom.NOMINAL_HU[phase]), (entry.name, phase)
        else:
            assert not entry.phantom.tissues and "MR" in entry.modalities, entry.name


def test_the_bundled_model_knows_every_structure_in_name_order():
    config = json.loads((default_model_dir() / "config.json").read_text(encoding="utf-8"))
    assert config["patch_classes"] == sorted(NAMES), "the bundled model must be rebuilt (training.build_default)"


def test_the_slicer_mirror_is_generated_from_the_catalogue():
    mirror = ROOT.joinpath("MediSeeSlicer/MediSeeLib/catalogue.py").read_text(encoding="utf-8")
    assert mirror == catalogue.python_mirror(), "run: python -m medisee.data.catalogue MediSeeSlicer/MediSeeLib/catalogue.py"
    namespace: dict = {}
    exec(compile(mirror, "catalogue.py", "exec"), namespace)
    assert set(namespace["COLOURS"]) == set(NAMES)
    coded = {entry.name: entry.code for entry in catalogue.catalogue() if entry.code}
    coded.update({pair.name: pair.code for pair in catalogue.pairs()})
    assert namespace["CODES"] == {name: (code.value, code.meaning, code.scheme) for name, code in coded.items()}


@pytest.mark.parametrize("change, message", [
    (lambda raw: raw["structures"].append(copy.deepcopy(raw["structures"][0])), "listed twice"),
    (lambda raw: raw["structures"][1].update(colour=raw["structures"][0]["colour"]), "share a colour"),
    (lambda raw: raw["structures"][0].update(laterality="both"), "laterality 'both'"),
    (lambda raw: raw["structures"][0].update(region="pelvis"), "region 'pelvis'"),
    (lambda raw: raw["structures"][0].update(modalities=["PET"]), "modalities"),
    (lambda raw: raw["structures"][0].update(colour=[300, 0, 0]), "three integers"),
    (lambda raw: raw["structures"][0].update(phantom={"generator": "xray"}), "generator 'xray'"),
    (lambda raw: raw["pairs"][0].update(right="liver"), "pair 'kidney'"),
])
def test_a_bad_catalogue_is_refused_with_its_problem(change, message):
    raw = copy.deepcopy(RAW)
    change(raw)
    with pytest.raises(ValueError, match=message):
        catalogue.parse(raw)
