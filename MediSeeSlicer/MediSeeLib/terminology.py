"""Standard terminology (SNOMED CT) for the structures MediSee knows, as Slicer segment terminology entries.

Only codes we are sure of are listed; other phrases get no terminology entry rather than a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass

ANATOMICAL_STRUCTURE = ("123037004", "Anatomical Structure")
# SNOMED CT concept id and meaning; vertebra, grey/white matter and lateral ventricles are left out
# until their codes are checked against Slicer's General Anatomy list.
STRUCTURES: dict[str, tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "right kidney": ("9846003", "Right kidney"),
    "left kidney": ("18639004", "Left kidney"),
    "kidney": ("64033007", "Kidney"),
    "aorta": ("15825003", "Aorta"),
    "heart": ("80891009", "Heart"),
    "right lung": ("3341006", "Right lung"),
    "left lung": ("44029006", "Left lung"),
    "lung": ("39607008", "Lung"),
    "stomach": ("69695003", "Stomach"),
    "brain": ("12738006", "Brain"),
}


@dataclass(frozen=True)
class Code:
    value: str
    meaning: str
    scheme: str = "SCT"


def code_for(phrase: str) -> Code | None:
    """The code of the structure ``phrase`` names ("the right kidney" -> Right kidney), or None."""
    words = " ".join(phrase.lower().replace("-", " ").split())
    for name in sorted(STRUCTURES, key=len, reverse=True):  # "right kidney" before "kidney"
        if f" {name} " in f" {words} " or f" {name}s " in f" {words} ":
            return Code(*STRUCTURES[name])
    return None


def terminology_entry(code: Code) -> str:
    """Slicer's segment tag ``TerminologyEntry`` string for an anatomical structure."""
    category = f"SCT^{ANATOMICAL_STRUCTURE[0]}^{ANATOMICAL_STRUCTURE[1]}"
    return (f"Segmentation category and type - 3D Slicer General Anatomy list~{category}~{code.scheme}^{code.value}^"
            f"{code.meaning}~^^~Anatomic codes - DICOM master list~^^~^^")
