"""Ordinary requests: how people ask for a structure, not how our reasoning templates do.

The reasoning templates (``templates``) never name their target, and perspective I names it
in a handful of tidy sentences; a radiologist types "liver", "Segment the liver.", "pls
outline the L kidney for volumetry", "segmnet the spleen" or "both kidneys". This module
writes such requests for training, from the catalogue's names, synonyms and informal names
(``knowledge.json``) and from structures outside the catalogue (``outside.json``), whose
right answer is that none is found; ``noise.perturb`` adds the surface noise of typed text
(case, punctuation, typos, fillers) to any query at training time.

Every record it makes says which catalogue structures its query asks for
(``extra["asked"]``: the query head's target) and carries its answer (``extra["answer"]``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from .knowledge import OutsideStructure, find_structure, outside_structures, paired_structures
from .loader import group_by_image, slice_key
from .records import Record
from .templates import DEFAULT_CANDIDATES, absent_answer, grouped_answer

VERBS = ("segment", "outline", "contour", "delineate", "highlight", "mark", "show", "find", "locate", "draw",
         "trace", "mask", "label", "identify", "select", "isolate", "annotate", "extract", "display", "circle")
DONE = ("segmented", "outlined", "contoured", "delineated", "highlighted", "marked", "masked", "labelled")
PRODUCTS = ("mask", "contour", "outline", "segmentation", "label", "delineation")
IMAGES = ("image", "scan", "slice", "CT", "MRI", "study", "picture", "series", "exam")
PURPOSES = ("for volumetry", "for a volume measurement", "for radiotherapy planning", "for the report",
            "so I can measure it", "before the operation", "to check its size", "for follow-up", "for me",
            "quickly", "for the tumour board", "to compare with the last scan")
JOINERS = (" and ", " and the ", ", ", " & ", " plus ", " as well as ", " and also ", " together with the ", " + ")
SINGLE_FRAMES = (
    "{n}", "{n}?", "{n} please", "{n} segmentation", "{n} mask", "{V} {the}{n}", "please {v} {the}{n}",
    "{V} {the}{n} please", "can you {v} {the}{n}", "could you {v} {the}{n} {purpose}", "would you {v} {the}{n} for me",
    "I need {the}{n} {done}", "I'd like a {product} of {the}{n}", "where is {the}{n}", "where's {the}{n}",
    "show me where {the}{n} is", "is {the}{n} visible", "find {the}{n} on this {image}", "{V} {the}{n} on this {image}",
    "{V} {the}{n} in this {image}", "{n}: {v} please", "help me {v} {the}{n}", "{V} {the}{n} {purpose}",
    "can I get {the}{n} {done}", "give me a {product} of {the}{n}", "need {the}{n} {done}", "{v} {n}",
    "where can I see {the}{n} here", "please show {the}{n} on this {image}", "{product} of {the}{n} please",
    "I want to see {the}{n}", "which part of this {image} is {the}{n}", "{V} {the}{n}, {purpose}",
)
# a structure the slice may not show: the same frames plus questions about whether it is there
ABSENT_FRAMES = SINGLE_FRAMES + ("is there a {n} on this {image}", "do you see {the}{n}", "any {n} here?")


# -- naming a structure ---------------------------------------------------------------------
def structure_name(name: str, rng: random.Random) -> str:
    """One way people name a catalogue structure: mostly its name, else a synonym or an
    informal name; paired organs sometimes with "the patient's"."""
    structure = find_structure(name)
    if structure is None:
        raise ValueError(f"{name!r} is not in the catalogue")
    roll = rng.random()
    if roll < 0.55:
        chosen = structure.name
    elif roll < 0.75 and structure.synonyms:
        chosen = rng.choice(structure.synonyms)
    elif structure.informal:
        chosen = rng.choice(structure.informal)
    else:
        chosen = structure.name
    if chosen.startswith(("left ", "right ")) and rng.random() < 0.2:
        chosen = "patient's " + chosen
    return chosen


def several_names(names: Sequence[str], rng: random.Random) -> str:
    """Several structures in one request: joined, or a paired organ's plural ("both kidneys")."""
    pair = _paired_plural(names)
    if pair is not None and rng.random() < 0.6:
        return rng.choice((f"both {pair}", f"the {pair}", pair, f"left and right {pair}", f"the two {pair}",
                           f"{pair} on both sides"))
    shared = _shared_noun(names)
    if shared is not None and rng.random() < 0.4:  # "grey and white matter", "left and right kidney"
        return f"{names[0][: -len(shared) - 1]} and {names[1][: -len(shared) - 1]} {shared}"
    parts = [structure_name(n, rng) for n in names]
    joiner = rng.choice(JOINERS)
    return joiner.join(parts) if len(parts) == 2 else ", ".join(parts[:-1]) + rng.choice((" and ", ", ")) + parts[-1]


def _shared_noun(names: Sequence[str]) -> str | None:
    """The last word two two-word names share ("matter" of grey and white matter), else None."""
    if len(names) != 2:
        return None
    first, second = (n.split() for n in names)
    if len(first) == len(second) == 2 and first[1] == second[1] and first[0] != second[0]:
        return first[1]
    return None


def _paired_plural(names: Sequence[str]) -> str | None:
    """"kidneys" for the left and right kidney, "lungs" for both lungs, else None."""
    for noun, sides in paired_structures().items():
        if sorted(names) == sorted(sides):
            return noun + "s"
    return None


def request(named: str, rng: random.Random, frames: Sequence[str] = SINGLE_FRAMES) -> str:
    """An ordinary request for ``named`` (a name or several joined), before surface noise."""
    verb = rng.choice(VERBS)
    text = rng.choice(frames).format(
        n=named, v=verb, V=verb.capitalize() if rng.random() < 0.5 else verb, done=rng.choice(DONE),
        the="" if rng.random() < 0.15 else "the ", product=rng.choice(PRODUCTS), image=rng.choice(IMAGES),
        purpose=rng.choice(PURPOSES))
    return re.sub(r"\bthe (both|the|left and right|the two) ", r"\1 ", text)


def outside_request(structure: OutsideStructure, rng: random.Random) -> tuple[str, str]:
    """A request for a structure the catalogue lacks: named (query, answer naming it) or, a
    third of the time, described by a fact (answer: no such structure can be found)."""
    if rng.random() < 0.67:
        query = request(structure.name, rng, ABSENT_FRAMES)
        explanation = f"The {structure.name} is not among the structures I can segment."
        return query, absent_answer(structure.name, explanation)
    fact = rng.choice(structure.facts)
    query = rng.choice((f"Which {structure.kind} {fact}?", f"Segment the {structure.kind} that {fact}.",
                        f"Show me the {structure.kind} that {fact}", f"where is the {structure.kind} that {fact}",
                        f"Outline the {structure.kind} which {fact}."))
    answer = (f"No, there is no such {structure.kind} in this image. "
              f"The {structure.kind} that {fact} is not among the structures I can segment.")
    return query, answer


# -- training records -------------------------------------------------------------------------
def instructions(records: list[Record], rng: random.Random, per_record: int = 2, pairs_per_slice: int = 4,
                 outside_per_slice: float = 2.0,
                 candidate_tokens: tuple[str, ...] = DEFAULT_CANDIDATES) -> list[Record]:
    """Ordinary requests over a jsonl's records: ``per_record`` for each single target
    (present: one named group; absent: "No, there is no ..."), ``pairs_per_slice`` pairs of
    targets sharing a slice (both kidneys, liver and spleen, ...), and on average
    ``outside_per_slice`` requests per slice for structures outside the catalogue."""
    out: list[Record] = []
    for record in records:
        structure = find_structure(record.class_text)
        if structure is None or record.extra.get("targets"):
            continue
        for _ in range(per_record):
            if record.absent:
                query = request(structure_name(structure.name, rng), rng, ABSENT_FRAMES)
                answer = absent_answer(structure.name, record.explanation)
            else:
                query = request(structure_name(structure.name, rng), rng)
                answer = grouped_answer([structure.name], candidate_tokens)
            out.append(_derived(record, query, answer, (structure.name,)))
    for group in group_by_image(records):
        named = [r for r in group if find_structure(r.class_text) is not None]
        pairs = [(a, b) for i, a in enumerate(named) for b in named[i + 1:]]
        for a, b in rng.sample(pairs, min(len(pairs), pairs_per_slice)):
            names = [find_structure(a.class_text).name, find_structure(b.class_text).name]
            query = request(several_names(names, rng), rng)
            targets = [{"class_text": r.class_text, "mask": str(r.mask), "bbox": list(r.bbox)} for r in (a, b)]
            out.append(_derived(a, query, grouped_answer(names, candidate_tokens), tuple(names), targets=targets))
    seen: set = set()
    outside = outside_structures()
    for record in records:
        key = slice_key(record)
        if key in seen:
            continue
        seen.add(key)
        count = int(outside_per_slice) + (rng.random() < outside_per_slice % 1)
        for _ in range(count):
            query, answer = outside_request(rng.choice(outside), rng)
            out.append(Record(record.image, None, record.class_text, query, query, None, "", absent=True,
                              source=record.source, extra={**record.extra, "answer": answer, "asked": []}))
    return out


def _derived(record: Record, query: str, answer: str, asked: tuple[str, ...], **extra: object) -> Record:
    return Record(record.image, record.mask, record.class_text, query, query, record.bbox, record.explanation,
                  absent=record.absent, source=record.source,
                  extra={**record.extra, "answer": answer, "asked": list(asked), "request": True, **extra})


