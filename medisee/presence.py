"""The presence check: an entity's score times how surely the slice shows the structure
the model means (``MediSeeConfig.presence_gate``).

Why: a language model trained from scratch answers "Sure" for a structure the slice does
not show more often than its patch head, which reads the pixels alone, believes the
structure is there (the tiny default's absent targets: its answer grounds about one in six
of them, its patch head sees more than nine in ten as absent). The check is late fusion of
the two: the answer still decides *whether* to ground and *which* structure; the patch head
vetoes structures it does not see.

Which structure the model means: a grounded group's phrase when it names one of the patch
classes; in fast mode, where no text is generated, the model's own distribution over the
patch classes' names as the continuation of the absent answer's opening ("No, there is no
..."), which the answer's naming loss trained it to fill in. Structures outside the patch
classes are not checked (factor 1).
"""

from __future__ import annotations

import torch

from .data.knowledge import structure_named_in


def structure_presence(patch_probs: torch.Tensor) -> torch.Tensor:
    """(I, cells, K) patch-head probabilities -> (I, K): each structure's highest cell."""
    return patch_probs.amax(dim=1)


def expected_presence(name_logprobs: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
    """(B,): the presence of the structure each row means, averaged over the model's
    distribution of names (``name_logprobs`` (B, K), any additive constant per row)."""
    return (torch.softmax(name_logprobs.float(), dim=-1) * presence.float()).sum(-1)


def named_class(phrase: str, classes: tuple[str, ...] | list[str]) -> int | None:
    """Index of the patch class a phrase names (itself, or the structure it mentions)."""
    lowered = [c.lower() for c in classes]
    if phrase.strip().lower() in lowered:
        return lowered.index(phrase.strip().lower())
    structure = structure_named_in(phrase)
    if structure is not None and structure.name.lower() in lowered:
        return lowered.index(structure.name.lower())
    return None


def phrase_presence(phrase: str, classes: tuple[str, ...] | list[str], presence_row: torch.Tensor) -> float:
    """The presence of the structure a group's phrase names; 1 when it names none of them."""
    index = named_class(phrase, classes)
    return 1.0 if index is None else float(presence_row[index])
