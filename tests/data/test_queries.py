import random
import re

import pytest

from medisee.data import queries, templates
from medisee.data.knowledge import load_knowledge
from medisee.data.queries import QueryAnswer, TargetContext, generate_queries

KNOWLEDGE = load_knowledge()
HELD_OUT = {p.id for p in templates.REASONING_PHRASINGS if p.held_out}
POSITIONS = (None, "upper left", "centre", "lower right")


def mentions(text: str, term: str) -> bool:
    return re.search(rf"\b{re.escape(term)}\b", text, re.IGNORECASE) is not None


def neighbours(name: str) -> list[str]:
    region = KNOWLEDGE[name].region
    if region == "brain":
        return [n for n, s in KNOWLEDGE.items() if s.region == "brain"]
    return [n for n, s in KNOWLEDGE.items() if s.region != "brain"]


def contexts(seed: int):
    """Every structure with a random subset of its possible neighbours and a position."""
    rng = random.Random(seed)
    for name, structure in KNOWLEDGE.items():
        others = [n for n in neighbours(name) if n != name]
        present = rng.sample(others, rng.randrange(len(others) + 1))
        yield TargetContext(name, structure.modalities[0], rng.choice(("axial", "coronal")), present,
                            rng.choice(POSITIONS))


def generated(split: str, seeds=range(12)):
    for seed in seeds:
        for context in contexts(seed):
            for qa in generate_queries(context, split, random.Random(seed), count=4):
                yield context, qa


@pytest.mark.parametrize("split", ["train", "test"])
def test_queries_never_name_the_target(split):
    for context, qa in generated(split):
        structure = KNOWLEDGE[context.class_name]
        for term in structure.terms:
            assert not mentions(qa.long, term) and not mentions(qa.short, term), (term, qa)
        assert mentions(qa.explanation, structure.name), qa


@pytest.mark.parametrize("split", ["train", "test"])
def test_location_queries_name_only_present_structures(split):
    checked = 0
    for context, qa in generated(split):
        if qa.orientation != "location":
            continue
        checked += 1
        for other in KNOWLEDGE.values():
            if other.name != context.class_name and other.name not in context.present:
                assert not any(mentions(qa.long + " " + qa.short, t) for t in other.terms), (other.name, context, qa)
    assert checked > 100


def test_anchors_and_position_are_used_when_available():
    context = TargetContext("left kidney", present=["spleen"], position="lower right")
    seen = [qa for seed in range(40) for qa in generate_queries(context, "train", random.Random(seed))]
    assert any("spleen" in qa.short for qa in seen)
    assert any("lower right" in qa.long for qa in seen)
    alone = TargetContext("left kidney")
    for seed in range(40):
        for qa in generate_queries(alone, "train", random.Random(seed)):
            assert "spleen" not in qa.long and "{" not in qa.long + qa.short + qa.explanation


def test_orientations_alternate():
    for seed in range(20):
        answers = generate_queries(TargetContext("liver", present=["stomach"]), "train", random.Random(seed), count=2)
        assert sorted(qa.orientation for qa in answers) == ["attribute", "location"]
        assert all(isinstance(qa, QueryAnswer) and qa.long and qa.short for qa in answers)


def test_splits_use_disjoint_phrasings():
    train = list(generated("train", range(6)))
    val = list(generated("val", range(6)))
    test = list(generated("test", range(6)))
    assert {qa.template_id for _, qa in train + val}.isdisjoint(HELD_OUT)
    assert {qa.template_id for _, qa in test} <= HELD_OUT
    # same seeds, same contexts: no query string is shared between train and test
    train_texts = {text for _, qa in train for text in (qa.long, qa.short)}
    assert train_texts.isdisjoint({text for _, qa in test for text in (qa.long, qa.short)})


def test_deterministic_per_seed():
    context = TargetContext("heart", present=["left lung", "right lung", "aorta"], position="centre")
    first = generate_queries(context, "train", random.Random(5), count=3)
    assert first == generate_queries(context, "train", random.Random(5), count=3)
    others = [generate_queries(context, "train", random.Random(s), count=3) for s in range(6, 12)]
    assert any(o != first for o in others)


def test_plural_target_agrees():
    context = TargetContext("lateral ventricles", "MR", present=["white matter", "brain"], position="centre")
    for seed in range(60):
        for split in ("train", "test"):
            for qa in generate_queries(context, split, random.Random(seed)):
                for text in (qa.long, qa.short, qa.explanation):
                    assert not re.search(r"\bit\b|\bventricles is\b|\bcavities is\b", text), text


def test_modality_alias_and_missing_appearance():
    mr = TargetContext("white matter", "MRI")
    assert any("T1" in qa.long or "T2" in qa.long
               for seed in range(40) for qa in generate_queries(mr, "train", random.Random(seed)))
    ct_brain = TargetContext("white matter", "CT")  # no CT appearance facts: other facets only
    for seed in range(20):
        assert all("T1" not in qa.long for qa in generate_queries(ct_brain, "train", random.Random(seed)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="no knowledge about 'gallbladder'"):
        generate_queries(TargetContext("gallbladder"), "train", random.Random(0))
    with pytest.raises(ValueError, match="split"):
        generate_queries(TargetContext("liver"), "holdout", random.Random(0))


def test_visual_prompt_query():
    region = templates.prompt_region(box=(0.1, 0.2, 0.4, 0.5))
    held_out = {p.id for p in templates.VISUAL_PHRASINGS if p.held_out}
    for seed in range(20):
        qa = queries.visual_prompt_query(TargetContext("spleen"), region, "test", random.Random(seed))
        assert qa.template_id in held_out and region in qa.long + qa.short
        assert "spleen" not in qa.long + qa.short and "spleen" in qa.explanation


def test_absent_explanation():
    text = queries.absent_explanation("right lung", random.Random(0))
    assert "right lung" in text and "not" in text and not templates.CANDIDATE_PATTERN.search(text)
    assert text == queries.absent_explanation("right lung", random.Random(0))
    assert any(loc in text for loc in KNOWLEDGE["right lung"].general_location)
    assert "gall bladder" in queries.absent_explanation("gall_bladder", random.Random(0))
    plural = queries.absent_explanation("lateral ventricles", random.Random(0))
    assert "ventricles is" not in plural and not re.search(r"\bit\b", plural)


def test_label_query_names_the_class():
    assert "left kidney" in queries.label_query("Kidney_Left", random.Random(0))
    assert "polyp" in queries.label_query("polyp", random.Random(0))


@pytest.mark.parametrize("bbox, expected", [
    ((0.0, 0.0, 0.2, 0.2), "upper left"), ((0.4, 0.4, 0.6, 0.6), "centre"), ((0.7, 0.4, 0.9, 0.6), "right side"),
    ((0.4, 0.8, 0.6, 1.0), "lower part"), ((0.8, 0.8, 1.0, 1.0), "lower right"),
])
def test_coarse_position(bbox, expected):
    assert queries.coarse_position(bbox) == expected


def test_corpus_lines_cover_every_phrasing():
    lines = queries.corpus_lines()
    assert len(lines) == len(set(lines)) > 1000
    assert all(line.isascii() and "{" not in line and "}" not in line for line in lines)
    text = "\n".join(lines)
    for phrasing in templates.REASONING_PHRASINGS + templates.VISUAL_PHRASINGS:
        opening = phrasing.short.split("{")[0]
        assert opening in text, phrasing.id
    for name in KNOWLEDGE:
        assert name in lines
    assert set(templates.REASONING_SUFFIXES) <= set(lines)


def test_paired_organs_get_the_patients_side_when_both_are_on_the_image():
    both = TargetContext("left kidney", "CT", "axial", ["right kidney", "liver"], "right side")
    for answer in generate_queries(both, "train", random.Random(3), count=6):
        assert "patient's left" in answer.short
    alone = TargetContext("left kidney", "CT", "axial", ["liver"], "right side")
    shorts = [a.short for a in generate_queries(alone, "train", random.Random(3), count=6)]
    assert not all("the one on the patient's left" in s for s in shorts)
