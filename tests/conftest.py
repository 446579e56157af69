"""Shared fixtures: the tiny preset with seeded random weights, and small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from medisee.builder import build_random, build_tiny_tokenizer
from medisee.config import preset


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer(preset("tiny"))


@pytest.fixture
def tiny(tiny_tokenizer):
    """A fresh tiny MediSee (seed 0): tests may train or modify it."""
    return build_random(preset("tiny"), seed=0, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_shared(tiny_tokenizer):
    """A tiny MediSee shared by read-only tests."""
    return build_random(preset("tiny"), seed=0, tokenizer=tiny_tokenizer)


@pytest.fixture
def phantom():
    """A 96x128 uint8 slice with a bright ellipse, its mask and normalised xyxy box."""
    yy, xx = np.mgrid[:96, :128]
    mask = ((xx - 80) / 24.0) ** 2 + ((yy - 40) / 16.0) ** 2 <= 1
    rng = np.random.default_rng(0)
    image = np.clip(60 + 20 * rng.standard_normal((96, 128)) + 120 * mask, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min() / 128, ys.min() / 96, (xs.max() + 1) / 128, (ys.max() + 1) / 96], dtype=np.float32)
    return image, mask.astype(np.uint8), box
