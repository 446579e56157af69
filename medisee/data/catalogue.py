"""The catalogue: every structure MediSee segments, in one file (``catalogue.json``).

Each structure has its name, synonyms and informal names, laterality (the patient's
``left``/``right`` or none), region, modalities, a display colour (0-255 RGB, distinct so
structures on one slice tell apart), a SNOMED CT code where one is checked (none for the
others), and the phantom that draws it: ``ct_phantom`` with the tissues of
``ct_phantom.NOMINAL_HU`` its Hounsfield units come from, or ``mni152_brain``. ``pairs``
name the unlateralised structure of a left/right pair ("kidney") with its own code.

Everything else derives from it: the knowledge base joins its facts to these names
(``knowledge.json``), the phantoms' structure lists are the catalogue's in catalogue order,
training configs say ``patch_classes: catalogue``, and the Slicer module reads a generated
mirror (:func:`python_mirror`; write it with ``python -m medisee.data.catalogue PATH``).
tests/data/test_catalogue.py fails when a structure is missing anywhere it must be.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

LATERALITIES = ("left", "right")
MODALITIES = ("CT", "MR")
REGIONS = ("abdomen", "thorax", "brain", "spine")
GENERATORS = ("ct_phantom", "mni152_brain")


@dataclass(frozen=True)
class Code:
    """A terminology code (SNOMED CT: scheme ``SCT``)."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class Phantom:
    """Which demo generator draws the structure; CT: the ``NOMINAL_HU`` tissues it is made of."""

    generator: str
    tissues: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    synonyms: tuple[str, ...]
    informal: tuple[str, ...]  # shorthand people type ("L kidney"); ambiguous alone, so not synonyms
    laterality: str | None
    region: str
    modalities: tuple[str, ...]
    colour: tuple[int, int, int]
    code: Code | None
    phantom: Phantom


@dataclass(frozen=True)
class Pair:
    """A left/right pair and the noun both share ("kidney": what "both kidneys" asks for)."""

    name: str
    left: str
    right: str
    code: Code | None


def _code(entry: dict | None) -> Code | None:
    return Code(entry["scheme"], entry["value"], entry["meaning"]) if entry else None


def _entry(raw: dict) -> CatalogueEntry:
    entry = CatalogueEntry(
        name=raw["name"], synonyms=tuple(raw["synonyms"]), informal=tuple(raw["informal"]),
        laterality=raw["laterality"], region=raw["region"], modalities=tuple(raw["modalities"]),
        colour=tuple(raw["colour"]), code=_code(raw["code"]),
        phantom=Phantom(raw["phantom"]["generator"], tuple(raw["phantom"].get("tissues", ()))),
    )
    problems = []
    if entry.region not in REGIONS:
        problems.append(f"region {entry.region!r} is not one of {REGIONS}")
    if not entry.modalities or not set(entry.modalities) <= set(MODALITIES):
        problems.append("modalities must be among " + ", ".join(MODALITIES))
    if entry.laterality not in (None, *LATERALITIES):
        problems.append(f"laterality {entry.laterality!r} is not one of {LATERALITIES} or null")
    if len(entry.colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in entry.colour):
        problems.append(f"colour {list(entry.colour)} is not three integers 0-255")
    if entry.phantom.generator not in GENERATORS:
        problems.append(f"phantom generator {entry.phantom.generator!r} is not one of {GENERATORS}")
    if problems:
        raise ValueError(f"catalogue.json: {entry.name}: " + "; ".join(problems))
    return entry


def parse(raw: dict) -> tuple[tuple[CatalogueEntry, ...], tuple[Pair, ...]]:
    """The structures and pairs of a catalogue document, checked (ValueError names the problem)."""
    entries = tuple(_entry(item) for item in raw["structures"])
    by_name = {entry.name: entry for entry in entries}
    if len(by_name) != len(entries):
        raise ValueError("catalogue.json: a structure is listed twice")
    colours = [entry.colour for entry in entries]
    if len(set(colours)) != len(colours):
        raise ValueError("catalogue.json: two structures share a colour")
    pairs = tuple(Pair(p["name"], p["left"], p["right"], _code(p.get("code"))) for p in raw["pairs"])
    for pair in pairs:
        sides = (by_name.get(pair.left), by_name.get(pair.right))
        if sides[0] is None or sides[1] is None or (sides[0].laterality, sides[1].laterality) != LATERALITIES:
            raise ValueError(f"catalogue.json: pair {pair.name!r} needs a left and a right structure of the catalogue")
    return entries, pairs


@lru_cache(maxsize=1)
def _load() -> tuple[tuple[CatalogueEntry, ...], tuple[Pair, ...]]:
    return parse(json.loads(resources.files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8")))


def catalogue() -> tuple[CatalogueEntry, ...]:
    """Every structure, in catalogue order (the phantoms' mask order)."""
    return _load()[0]


def names() -> tuple[str, ...]:
    return tuple(item.name for item in catalogue())


def pairs() -> tuple[Pair, ...]:
    return _load()[1]


def drawn_by(generator: str) -> tuple[str, ...]:
    """The structures a demo generator draws, in catalogue order (its masks' order)."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}: expected one of {GENERATORS}")
    return tuple(item.name for item in catalogue() if item.phantom.generator == generator)


def python_mirror() -> str:
    """The catalogue's names, codes and colours as a standalone Python module, for code that
    may not import medisee (MediSeeSlicer/MediSeeLib/catalogue.py)."""
    codes = {item.name: item.code for item in catalogue() if item.code}
    codes.update({pair.name: pair.code for pair in pairs() if pair.code})
    lines = ['"""Generated from medisee/data/catalogue.json by `python -m medisee.data.catalogue PATH`: do not edit.',
             "", 'tests/data/test_catalogue.py fails when it differs from the catalogue."""', "",
             "from __future__ import annotations", "",
             "# structure -> (code, meaning, scheme); structures without a checked code are left out",
             "CODES: dict[str, tuple[str, str, str]] = {"]
    lines += [f"    {name!r}: ({code.value!r}, {code.meaning!r}, {code.scheme!r})," for name, code in codes.items()]
    lines += ["}", "# structure -> display colour (0-255 RGB)", "COLOURS: dict[str, tuple[int, int, int]] = {"]
    lines += [f"    {item.name!r}: {item.colour}," for item in catalogue()]
    lines += ["}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m medisee.data.catalogue PATH  (writes the catalogue's Python mirror)")
    Path(sys.argv[1]).write_text(python_mirror(), encoding="utf-8")
