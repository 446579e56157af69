"""Knowledge-driven reasoning queries (replaces the paper's GPT-4 step offline).

Like MLMR-SD, a target is described from two orientations: by its attributes (function,
appearance, findings) or by its location (relations to structures visible in the same
image, its place in normal anatomy, its position in the displayed image); each with a long
query (reasoning context plus a question) and a short one, and an explanation that names
the target. Queries never name the target: they are phrasings from :mod:`.templates` filled
with facts from :mod:`.knowledge`. The test split uses held-out phrasings only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from . import templates
from .knowledge import Structure, find_structure, load_knowledge
from .templates import Phrasing

_PRONOUNS = {
    False: {"be": "is", "it": "it", "It": "It", "obj": "it"},
    True: {"be": "are", "it": "they", "It": "They", "obj": "them"},
}
_MODALITY_ALIASES = {"MRI": "MR"}
_FINDING_FIELDS = {"clue", "phrase", "condition"}
_RETRIES = 10  # redraws to avoid repeating a query within one call
_EXAMPLE_BOX = (0.25, 0.30, 0.55, 0.70)  # visual prompts written into the tokenizer corpus
_EXAMPLE_POINT = (0.40, 0.50)


@dataclass
class TargetContext:
    """What the generator knows about one target in one image."""

    class_name: str  # knowledge-base key, e.g. "liver", "left kidney", "grey matter"
    modality: str = "CT"  # "CT" or "MR"
    plane: str = "axial"  # "axial", "coronal" or "sagittal"
    present: list[str] = field(default_factory=list)  # other structures visible in the same image
    position: str | None = None  # coarse place in the image as displayed, e.g. "upper left", "centre"


@dataclass
class QueryAnswer:
    long: str
    short: str
    explanation: str
    orientation: str  # "attribute" or "location"
    template_id: str  # which phrasing produced it (train and held-out phrasings never share ids)


def display_name(class_name: str) -> str:
    """The knowledge base's name for a label it knows ("Kidney_Left" -> "left kidney"),
    otherwise the label with underscores turned into spaces."""
    structure = find_structure(class_name)
    return structure.name if structure else re.sub(r"[_\s]+", " ", class_name).strip()


def coarse_position(bbox: tuple[float, float, float, float]) -> str:
    """Where a normalised box's centre falls in a 3x3 grid of the displayed image, in words
    that fit "the {position} of this image": "upper left", "upper part", "centre", ..."""
    row = ("upper", "middle", "lower")[min(int((bbox[1] + bbox[3]) / 2 * 3), 2)]
    col = ("left", "centre", "right")[min(int((bbox[0] + bbox[2]) / 2 * 3), 2)]
    if row == "middle":
        return "centre" if col == "centre" else f"{col} side"
    return f"{row} part" if col == "centre" else f"{row} {col}"


def _structure(class_name: str) -> Structure:
    structure = find_structure(class_name)
    if structure is None:
        known = ", ".join(sorted(load_knowledge()))
        raise ValueError(f"no knowledge about {class_name!r}; known structures: {known}")
    return structure


def _modality(modality: str) -> str:
    return _MODALITY_ALIASES.get(modality.upper(), modality.upper())


def _facts(structure: Structure, facet: str, modality: str) -> tuple[str, ...]:
    """The facts ``{fact}``/``{fact2}`` of a phrasing are drawn from, by its facet."""
    if facet.endswith("function"):
        return structure.function
    if facet.endswith("appearance"):
        return structure.appearance.get(modality, ())
    return structure.general_location


def _anchored(structure: Structure, context: TargetContext) -> tuple[str, ...]:
    """Location facts whose every anchor is visible in this image."""
    present = {s.name for s in map(find_structure, context.present) if s is not None} - {structure.name}
    return tuple(loc.text for loc in structure.location if loc.anchors and set(loc.anchors) <= present)


def _usable(phrasing: Phrasing, structure: Structure, context: TargetContext, region: str | None = None) -> bool:
    need = phrasing.fields
    facts = _facts(structure, phrasing.facet, _modality(context.modality))
    return not (
        ("fact2" in need and len(facts) < 2)
        or ("fact" in need and not facts)
        or ("anchor" in need and not _anchored(structure, context))
        or (need & _FINDING_FIELDS and not structure.findings)
        or ("position" in need and not context.position)
        or ("region" in need and region is None)
    )


def _render(phrasing: Phrasing, structure: Structure, context: TargetContext, rng: random.Random,
            region: str | None = None) -> QueryAnswer:
    """Fill a usable phrasing, drawing only the facts it needs."""
    need = phrasing.fields
    modality = _modality(context.modality)
    values = dict(_PRONOUNS[structure.plural], name=structure.name, kind=structure.kind, modality=modality,
                  plane=context.plane, position=context.position or "", region=region or "")
    facts = _facts(structure, phrasing.facet, modality)
    if "fact2" in need:
        values["fact"], values["fact2"] = rng.sample(facts, 2)
    elif "fact" in need:
        values["fact"] = rng.choice(facts)
    if "anchor" in need:
        values["anchor"] = rng.choice(_anchored(structure, context))
    if need & _FINDING_FIELDS:
        finding = rng.choice(structure.findings)
        values.update(clue=finding.clue, phrase=finding.phrase, condition=finding.condition)
    return QueryAnswer(
        long=phrasing.long.format(**values),
        short=phrasing.short.format(**values),
        explanation=phrasing.explanation.format(**values),
        orientation=phrasing.orientation,
        template_id=phrasing.id,
    )


def generate_queries(context: TargetContext, split: str, rng: random.Random, count: int = 2) -> list[QueryAnswer]:
    """``count`` implicit queries about the target, alternating attribute and location
    orientation (starting with either), using only the phrasings of ``split``. Location
    queries name only structures listed in ``context.present``. Deterministic given ``rng``."""
    structure = _structure(context.class_name)
    by_orientation: dict[str, list[Phrasing]] = {}
    for phrasing in templates.phrasings_for(split):
        if _usable(phrasing, structure, context):
            by_orientation.setdefault(phrasing.orientation, []).append(phrasing)
    orientations = [o for o in ("attribute", "location") if o in by_orientation]
    start = rng.randrange(len(orientations))
    answers: list[QueryAnswer] = []
    seen: set[tuple[str, str]] = set()
    for i in range(count):
        options = by_orientation[orientations[(start + i) % len(orientations)]]
        for _ in range(_RETRIES):
            answer = _render(rng.choice(options), structure, context, rng)
            if (answer.long, answer.short) not in seen:
                break
        seen.add((answer.long, answer.short))
        answers.append(_disambiguate(answer, structure, context))
    return answers


def _side_partner(structure: Structure) -> str | None:
    """'right kidney' for 'left kidney' and so on; None for unpaired structures."""
    for side, other in (("left", "right"), ("right", "left")):
        if structure.name.startswith(side + " "):
            return other + structure.name[len(side):]
    return None


def _disambiguate(answer: QueryAnswer, structure: Structure, context: TargetContext) -> QueryAnswer:
    """Paired organs share their facts: when the partner is also on the image, a query that
    does not say which side would have two right answers, so add the patient's side."""
    partner = _side_partner(structure)
    present = {found.name for name in context.present if (found := find_structure(name)) is not None}
    side = structure.name.split(" ", 1)[0]
    if partner is None or partner not in present or f"patient's {side}" in answer.short:
        return answer
    clause = f"the one on the patient's {side}"
    return QueryAnswer(
        long=f"{answer.long.rstrip()} I mean {clause}.",
        short=f"{answer.short.rstrip(' ?.')}, {clause}?",
        explanation=answer.explanation,
        orientation=answer.orientation,
        template_id=answer.template_id,
    )


def visual_prompt_query(context: TargetContext, region: str, split: str, rng: random.Random) -> QueryAnswer:
    """A question about the structure a visual prompt marks (MIMOSeg Perspective IV);
    ``region`` is :func:`templates.prompt_region`'s text. The answer names the structure."""
    structure = _structure(context.class_name)
    options = [p for p in templates.phrasings_for(split, templates.VISUAL_PHRASINGS)
               if _usable(p, structure, context, region)]
    return _render(rng.choice(options), structure, context, rng, region)


def absent_explanation(class_name: str, rng: random.Random) -> str:
    """One sentence: the structure is not visible here, and where it would normally be."""
    structure = find_structure(class_name)
    if structure is None:
        return rng.choice(templates.ABSENT_UNKNOWN_TEMPLATES).format(name=display_name(class_name))
    template = rng.choice(templates.ABSENT_TEMPLATES)
    fact = rng.choice(structure.general_location)
    return template.format(name=structure.name, fact=fact, **_PRONOUNS[structure.plural])


def label_query(class_name: str, rng: random.Random) -> str:
    """A plain query that names the class ("Please segment the liver in this image."): the
    non-reasoning prompt of the fine-tuning similarity loss."""
    return templates.referring_query(display_name(class_name), rng)


def corpus_lines() -> list[str]:
    """Every phrasing, fact and explanation, filled from the knowledge base, without
    duplicates: the text the tiny model's tokenizer is fitted to."""
    knowledge = load_knowledge()
    rng = random.Random(0)
    lines: list[str] = []
    for structure in knowledge.values():
        pronouns = _PRONOUNS[structure.plural]
        facts = [*structure.function, *(loc.text for loc in structure.location),
                 *(fact for facts in structure.appearance.values() for fact in facts),
                 *(finding.phrase for finding in structure.findings)]
        lines += [structure.name, *structure.synonyms, *(f"The {structure.name} {fact}." for fact in facts)]
        lines += [f"{finding.clue} The {structure.name} can develop {finding.condition}." for finding in structure.findings]
        for modality in structure.modalities:
            context = TargetContext(structure.name, modality, present=list(knowledge), position="upper left")
            for phrasing in templates.REASONING_PHRASINGS:
                if _usable(phrasing, structure, context):
                    answer = _render(phrasing, structure, context, rng)
                    lines += [answer.long, answer.short, templates.grounded_answer(answer.explanation)]
            for phrasing in templates.VISUAL_PHRASINGS:
                for region in (templates.prompt_region(box=_EXAMPLE_BOX), templates.prompt_region(point=_EXAMPLE_POINT)):
                    if _usable(phrasing, structure, context, region):
                        answer = _render(phrasing, structure, context, rng, region)
                        lines += [answer.long, answer.short, templates.grounded_answer(answer.explanation)]
        for template in templates.ABSENT_TEMPLATES:
            lines += [templates.absent_answer(structure.name, template.format(name=structure.name, fact=fact, **pronouns))
                      for fact in structure.general_location]
        class_templates = (*templates.REFERRING_TEMPLATES, *templates.PLAIN_EXPLANATIONS, *templates.PROMPT_ANSWERS)
        lines += [template.format(class_name=structure.name) for template in class_templates]
    lines += [template.format(name="structure") for template in templates.ABSENT_UNKNOWN_TEMPLATES]
    lines += list(templates.REASONING_SUFFIXES)
    lines += [*templates.BOX_QUESTIONS, *templates.POINT_QUESTIONS]
    return list(dict.fromkeys(lines))
