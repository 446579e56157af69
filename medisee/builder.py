"""Building a MediSee from a config alone: the tiny preset's tokenizer and seeded weights.

Used for tests, for benchmarks, and as the bundled default until trained weights ship."""

from __future__ import annotations

from importlib import resources

import torch

from .config import MediSeeConfig, preset
from .model import MediSee
from .tokenizer import train_bpe_tokenizer


def tokenizer_corpus() -> list[str]:
    """The project's own small text corpus for the tiny tokenizer."""
    text = resources.files("medisee").joinpath("assets/tokenizer_corpus.txt").read_text()
    return [line for line in text.splitlines() if line.strip()]


def build_tiny_tokenizer(config: MediSeeConfig):
    return train_bpe_tokenizer(tokenizer_corpus(), config.text.vocab_size - config.num_candidates,
                               config.candidate_tokens)


def build_random(config: MediSeeConfig | str = "tiny", seed: int = 0, tokenizer=None) -> MediSee:
    """A MediSee with seeded random weights (same seed -> identical weights)."""
    if isinstance(config, str):
        config = preset(config)
    if tokenizer is None:
        tokenizer = build_tiny_tokenizer(config)
    torch.manual_seed(seed)
    bundle = MediSee(config, tokenizer)
    bundle.model.eval()
    return bundle
