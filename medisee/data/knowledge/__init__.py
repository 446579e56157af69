"""A small medical knowledge base: the facts the offline query generator reasons from.

Every fact is a verb phrase without its subject ("filters waste out of the blood"), so one
fact fills many phrasings ("Which organ here filters ...?", "The left kidney filters ...").
Facts of structures with ``plural = true`` use plural verbs. Left and right are always the
patient's. ``location`` statements name their ``anchors`` (other structures in this base),
so a location query can be restricted to the structures visible in the image.

Names, synonyms, informal names, region and modalities come from the catalogue
(``medisee/data/catalogue.json``); ``knowledge.json`` holds what is said about each of its
structures, in the order the query generator (and the tokenizer corpus) walks them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from .. import catalogue


@dataclass(frozen=True)
class OutsideStructure:
    """A structure people ask for that the catalogue does not hold (``outside.json``)."""

    name: str
    kind: str  # the noun a question may use instead of the name
    facts: tuple[str, ...]  # verb phrases, as the catalogue's functions


@dataclass(frozen=True)
class Location:
    text: str  # verb phrase, e.g. "lies below the spleen"
    anchors: tuple[str, ...] = ()  # structures the phrase names; empty for a general statement


@dataclass(frozen=True)
class Finding:
    condition: str  # noun phrase for explanations, e.g. "kidney stones"
    clue: str  # one sentence of clinical context that never names the structure
    phrase: str  # verb phrase for questions, e.g. "may be holding a stone"


@dataclass(frozen=True)
class Structure:
    name: str
    synonyms: tuple[str, ...]
    region: str
    modalities: tuple[str, ...]
    kind: str  # the noun a query may use instead of the name: "organ", "bone", ...
    plural: bool
    function: tuple[str, ...]
    location: tuple[Location, ...]
    appearance: dict[str, tuple[str, ...]] = field(hash=False)  # modality -> verb phrases
    findings: tuple[Finding, ...]
    # shorthand and informal names people type ("L kidney", "spine"): ordinary requests use
    # them; not ``terms``, since some are ambiguous on their own ("cortex", "ventricles")
    informal: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[str, ...]:
        """Every way of naming the structure: what an implicit query must never contain."""
        return (self.name, *self.synonyms)

    @property
    def general_location(self) -> tuple[str, ...]:
        """Location statements that name no other structure (usable in any image)."""
        return tuple(loc.text for loc in self.location if not loc.anchors)


def normalise(name: str) -> str:
    """Label spellings differ between datasets ("Kidney_Left", "left  kidney")."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


@lru_cache(maxsize=1)
def _load() -> dict[str, Structure]:
    text = resources.files(__name__).joinpath("knowledge.json").read_text(encoding="utf-8")
    return join(catalogue.catalogue(), json.loads(text)["structures"])


def join(entries: tuple[catalogue.CatalogueEntry, ...], facts: list[dict]) -> dict[str, Structure]:
    """Each catalogue structure with its facts, in the facts' order; every structure needs
    facts and every fact a catalogue structure (ValueError otherwise)."""
    by_name = {entry.name: entry for entry in entries}
    structures = {}
    for item in facts:
        if item["name"] not in by_name:
            raise ValueError(f"knowledge.json: {item['name']!r} is not in the catalogue (catalogue.json)")
        structure = _parse(by_name[item["name"]], item)
        structures[structure.name] = structure
    missing = [name for name in by_name if name not in structures]
    if missing:
        raise ValueError(f"knowledge.json: no facts for the catalogue's {missing}")
    for structure in structures.values():
        for loc in structure.location:
            unknown = set(loc.anchors) - set(structures)
            if unknown:
                raise ValueError(f"knowledge.json: {structure.name}: unknown anchors {sorted(unknown)}")
    return structures


def _parse(entry: catalogue.CatalogueEntry, facts: dict) -> Structure:
    name = entry.name
    structure = Structure(
        name=name,
        synonyms=entry.synonyms,
        region=entry.region,
        modalities=entry.modalities,
        kind=facts["kind"],
        plural=bool(facts["plural"]),
        function=tuple(facts["function"]),
        location=tuple(Location(loc["text"], tuple(loc["anchors"])) for loc in facts["location"]),
        appearance={modality: tuple(texts) for modality, texts in facts["appearance"].items()},
        findings=tuple(Finding(**finding) for finding in facts["findings"]),
        informal=entry.informal,
    )
    problems = []
    if not set(structure.appearance) <= set(structure.modalities):
        problems.append("appearance keys must be among the catalogue's modalities " + ", ".join(structure.modalities))
    # generation draws two different facts for long queries
    if len(structure.function) < 2 or len(structure.general_location) < 2:
        problems.append("needs at least two function facts and two general location statements")
    if any(len(facts) < 2 for facts in structure.appearance.values()) or not structure.findings:
        problems.append("needs at least two appearance facts per modality and one finding")
    if problems:
        raise ValueError(f"knowledge.json: {name}: " + "; ".join(problems))
    return structure


def load_knowledge() -> dict[str, Structure]:
    """Structures by name (a fresh dict; the structures themselves are immutable)."""
    return dict(_load())


@lru_cache(maxsize=1)
def outside_structures() -> tuple[OutsideStructure, ...]:
    """Structures outside the catalogue: requests for them are answered "none found"."""
    text = resources.files(__name__).joinpath("outside.json").read_text(encoding="utf-8")
    outside = tuple(OutsideStructure(e["name"], e["kind"], tuple(e["facts"])) for e in json.loads(text)["structures"])
    clashes = [o.name for o in outside if find_structure(o.name) is not None]
    if clashes:
        raise ValueError(f"outside.json: {clashes} are in the catalogue (knowledge.json)")
    return outside


def find_structure(name: str) -> Structure | None:
    """The structure a dataset label refers to, by name or synonym, or None if unknown."""
    wanted = normalise(name)
    for structure in _load().values():
        if wanted in (normalise(term) for term in structure.terms):
            return structure
    return None


@lru_cache(maxsize=1)
def _term_pattern() -> tuple[re.Pattern, dict[str, Structure]]:
    by_term = {normalise(term): structure for structure in _load().values() for term in structure.terms}
    alternatives = sorted(by_term, key=len, reverse=True)  # "left kidney" before "kidney left" and "brain"
    pattern = re.compile(r"\b(" + "|".join(re.escape(t).replace(r"\ ", r"[\s_\-]+") for t in alternatives) + r")\b",
                         re.IGNORECASE)
    return pattern, by_term


def structure_named_in(text: str) -> Structure | None:
    """The first structure a free text names ("The marked structure is the left kidney; it
    ..." -> left kidney): how an answer without a ``<p>phrase</p>`` names its entity."""
    pattern, by_term = _term_pattern()
    found = pattern.search(text or "")
    return by_term[normalise(found.group(1))] if found else None


@lru_cache(maxsize=1)
def paired_structures() -> dict[str, tuple[str, str]]:
    """Shared noun -> (left, right) for the catalogue's paired structures ("kidney" ->
    ("left kidney", "right kidney")): what "both kidneys" or "the lungs" ask for."""
    return {pair.name: (pair.left, pair.right) for pair in sorted(catalogue.pairs(), key=lambda pair: pair.name)}


def asks_for_both_sides(text: str, noun: str) -> bool:
    """Whether ``text`` asks for both sides of a paired structure: its plural ("lungs",
    "kidneys"), "both"/"left and right"/"bilateral" before the noun."""
    plural = rf"\b{re.escape(noun)}s\b"
    both = rf"\b(?:both|bilateral|left\s+and\s+right|right\s+and\s+left|two)\s+(?:of\s+the\s+)?{re.escape(noun)}s?\b"
    return bool(re.search(plural, text, re.IGNORECASE) or re.search(both, text, re.IGNORECASE))
