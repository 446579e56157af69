"""Resolving ``--model``: the bundled default or a local checkpoint folder."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .builder import build_random
from .model import MediSee
from .quantize import QUANTISED, quantise_language_model, require_quantisation
from .weights import WeightsError, load_checkpoint, read_metadata

DEFAULT = "default"
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, **{name: None for name in QUANTISED}}


def default_model_dir() -> Path:
    """Where the trained default checkpoint ships inside the package."""
    return Path(str(resources.files("medisee").joinpath("assets/default-model")))


@dataclass
class LoadedModel:
    bundle: MediSee
    name: str
    trained: bool
    note: str


def load_model(spec: str, device: str = "cpu", dtype: torch.dtype | None = None,
               precision: str | None = None) -> LoadedModel:
    """``default`` (the bundled model) or the path of a MediSee checkpoint folder, in
    ``precision`` (a ``PRECISIONS`` name; 8bit/4bit: ``medisee.quantize``) or ``dtype``."""
    if precision in QUANTISED:
        require_quantisation(precision, device)  # before 15 GB are read
        loaded = load_model(spec, "cpu", torch.bfloat16)
        quantise_language_model(loaded.bundle.model, precision, device)
        loaded.bundle.model.to(device)
        return loaded
    if precision is not None:
        dtype = PRECISIONS[precision]
    if spec == DEFAULT:
        folder = default_model_dir()
        if (folder / "config.json").exists():
            bundle = load_checkpoint(folder, device=device, dtype=dtype or torch.float32)  # stored in bfloat16
            meta = read_metadata(folder)
            return LoadedModel(bundle, "default", True, meta.get("description", "bundled tiny MediSee"))
        note = ("no trained default model is bundled yet: using the tiny preset with seeded random "
                "weights (answers and masks are meaningless)")
        bundle = build_random("tiny", seed=0)
        bundle.model.to(device=device, dtype=dtype)
        return LoadedModel(bundle, "default (untrained tiny)", False, note)
    path = Path(spec)
    if not path.exists():
        raise WeightsError(f"unknown model {spec!r}: use 'default' or the path of a MediSee checkpoint folder")
    bundle = load_checkpoint(path, device=device, dtype=dtype)
    meta = read_metadata(path)
    return LoadedModel(bundle, str(path), bool(meta.get("trained", True)), meta.get("description", ""))
