"""Standard terminology (SNOMED CT) and display colours of the structures MediSee knows, for Slicer segments.

Both come from the catalogue's generated mirror (:mod:`.catalogue`). Only codes we are sure of are listed;
other phrases get no terminology entry rather than a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalogue import CODES, COLOURS

ANATOMICAL_STRUCTURE = ("123037004", "Anatomical Structure")


@dataclass(frozen=True)
class Code:
    value: str
    meaning: str
    scheme: str = "SCT"


def _named(phrase: str, names) -> str | None:
    """The longest of ``names`` that ``phrase`` names, singular or plural ("right kidney" before "kidney")."""
    words = " ".join(phrase.lower().replace("-", " ").split())
    for name in sorted(names, key=len, reverse=True):
        if f" {name} " in f" {words} " or f" {name}s " in f" {words} ":
            return name
    return None


def code_for(phrase: str) -> Code | None:
    """The code of the structure ``phrase`` names ("the right kidney" -> Right kidney), or None."""
    name = _named(phrase, CODES)
    return Code(*CODES[name]) if name else None


def colour_for(phrase: str) -> tuple[float, float, float] | None:
    """The catalogue's display colour (0-1 RGB) of the structure ``phrase`` names, or None: the same
    structure gets the same colour in every answer."""
    name = _named(phrase, COLOURS)
    return tuple(channel / 255 for channel in COLOURS[name]) if name else None


def terminology_entry(code: Code) -> str:
    """Slicer's segment tag ``TerminologyEntry`` string for an anatomical structure."""
    category = f"SCT^{ANATOMICAL_STRUCTURE[0]}^{ANATOMICAL_STRUCTURE[1]}"
    return (f"Segmentation category and type - 3D Slicer General Anatomy list~{category}~{code.scheme}^{code.value}^"
            f"{code.meaning}~^^~Anatomic codes - DICOM master list~^^~^^")
