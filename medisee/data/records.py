"""The common sample record and the error every reader raises.

A ``Record`` is one line of an MLMR-SD-format jsonl file: an image, the mask of one target,
its class, a long and a short (reasoning) query, the target's box and, in our files, an
explanatory answer. Targets that are absent from the image (negatives: the right answer is
"not found") have ``mask = None`` and ``absent = True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """A bad sample; the message starts with ``file:line:`` so it can be fixed at the source."""


@dataclass
class Record:
    image: Path  # absolute path of the image (PNG, NIfTI slice, DICOM, ...)
    mask: Path | None  # absolute path of the binary mask, None when the target is absent
    class_text: str  # the target's class, e.g. "liver"
    long: str  # long reasoning query
    short: str  # short reasoning query
    bbox: tuple[float, float, float, float] | None  # normalised x0, y0, x1, y1; None when absent
    explanation: str = ""  # why this structure answers the query (answer text after the tokens)
    absent: bool = False
    source: str = ""  # "file:line" it came from
    extra: dict = field(default_factory=dict)  # any other fields (patient, split, perspective, modality, ...)
