"""Knowledge-driven reasoning queries (replaces the paper's GPT-4 step offline).

INTERFACE STUB: being implemented; signatures are fixed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


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


def generate_queries(context: TargetContext, split: str, rng: random.Random, count: int = 2) -> list[QueryAnswer]:
    raise NotImplementedError


def absent_explanation(class_name: str, rng: random.Random) -> str:
    raise NotImplementedError
