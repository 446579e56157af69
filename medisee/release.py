"""Assembling a MediSee checkpoint from the released artefacts on local disk.

Either the released MediSee folder (every tensor), or the starting point of training:
LLaVA-Med v1.5 (+ CLIP when LLaVA-Med's folder lacks the tower) + MedSAM, with the new
parts (routers, seg projection, box decoder, LoRA) freshly initialised. The sizes come from
the downloads (``release_shapes``). The model is built without random initialisation
(``no_init_weights``) directly in the target dtype and the tensors are read one at a time,
so a 7B model costs its weights' memory once (about 15 GB in bfloat16) and no init time;
``check_only`` builds it on the meta device and reads only names and shapes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.initialization import no_init_weights

from .config import MediSeeConfig
from .model import MediSee, MediSeeModel
from .release_shapes import ReleasedShapes, read_shapes
from .tensor_files import TensorFiles
from .tokenizer import add_candidate_tokens, candidate_token_ids, load_tokenizer
from .weights import (CLIP_PREFIX, LoadReport, load_clip, load_llava_med, load_medsam, load_released_medisee,
                      released_tensors)

log = logging.getLogger(__name__)


@dataclass
class ReleasedPaths:
    llava_med: Path  # folder: weights + tokenizer
    medsam: Path | None = None  # medsam_vit_b.pth
    clip: Path | None = None  # CLIP ViT-L/14-336 folder (HF layout)
    medisee: Path | None = None  # released MediSee folder of .bin files


def build_uninitialised(config: MediSeeConfig, tokenizer, dtype: torch.dtype = torch.float32,
                        device: str = "cpu") -> MediSee:
    """A MediSee whose weights are allocated but not initialised (to be loaded); on the
    "meta" device nothing is allocated (shapes only)."""
    ids = candidate_token_ids(tokenizer, config.candidate_tokens)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), torch.device(device):
            model = MediSeeModel(config, ids)
    finally:
        torch.set_default_dtype(previous)
    return MediSee(config, tokenizer, model=model)


def initialise_new_parts(model: MediSeeModel) -> None:
    """Fresh initialisation of what no released base model holds: routers, seg projection,
    box decoder (zero last layer), LoRA (A random, B zero, as peft does) and, when the config
    has them, the visual prompt encoder, input aligner and patch head."""
    for module in (model.router_seg, model.router_box, model.text_hidden_fcs, model.bbox_decoder):
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
    nn.init.zeros_(model.bbox_decoder.layers[-1].weight)
    nn.init.zeros_(model.bbox_decoder.layers[-1].bias)
    for module in (model.prompt_encoder, model.input_aligner, model.patch_head):  # when configured
        for layer in (module.modules() if module is not None else ()):
            reset = getattr(layer, "reset_parameters", None) or getattr(layer, "_reset_parameters", None)
            if reset is not None and layer is not module:
                reset()
    if model.prompt_encoder is not None:
        model.prompt_encoder.positional_gaussian.normal_()
    if model.input_aligner is not None:
        nn.init.normal_(model.input_aligner.queries, std=0.02)
    for name, layer in model.named_modules():
        if hasattr(layer, "reset_lora_parameters") and hasattr(layer, "active_adapters"):
            for adapter in layer.active_adapters:
                layer.reset_lora_parameters(adapter, True)


def assemble(config: MediSeeConfig, paths: ReleasedPaths, dtype: torch.dtype = torch.bfloat16,
             check_only: bool = False) -> tuple[MediSee, list[LoadReport], ReleasedShapes]:
    """Load the released artefacts into a new MediSee whose sizes the downloads give
    (``config`` supplies the rest); returns it, what each load did and where the shapes came
    from. ``check_only``: every name and shape checked, no tensor read, nothing allocated."""
    tokenizer = load_tokenizer(paths.llava_med)
    added = add_candidate_tokens(tokenizer, config.candidate_tokens)
    log.info("tokenizer from %s: %d tokens (%d candidate tokens added)", paths.llava_med, len(tokenizer), added)
    released = released_tensors(paths.medisee) if paths.medisee is not None else None
    if released is None and paths.medsam is None:
        raise ValueError("without the released MediSee folder, --medsam (medsam_vit_b.pth) is required")
    medsam = TensorFiles(paths.medsam) if released is None else None
    shapes = read_shapes(config, paths.llava_med, paths.clip, released, medsam, added)
    bundle = build_uninitialised(shapes.config, tokenizer, dtype, "meta" if check_only else "cpu")
    load = {"origin": shapes.origin, "check_only": check_only}
    if paths.medisee is not None:
        return bundle, [load_released_medisee(bundle, paths.medisee, **load)], shapes
    reports = [load_llava_med(bundle, paths.llava_med, **load)]
    if not any(name.startswith(CLIP_PREFIX) for name in reports[0].filled):
        if paths.clip is None:
            raise ValueError(f"{paths.llava_med} holds no CLIP vision tower: give --clip (clip-vit-large-patch14-336 folder)")
        reports.append(load_clip(bundle, paths.clip, **load))
    reports.append(load_medsam(bundle, paths.medsam, **load))
    if not check_only:
        initialise_new_parts(bundle.model)
    return bundle, reports, shapes
