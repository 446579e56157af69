"""``medisee info``: the components of a model and their parameter counts."""

from __future__ import annotations

import argparse

import torch

from ..config import PRESETS, MediSeeConfig, preset
from ..memory import memory_table
from ..model.medisee import MediSeeModel
from ..model.trainable import configure_trainable, count_parameters
from ..models import load_model


def register(commands) -> None:
    parser = commands.add_parser(
        "info", help="show a model's components and parameter counts",
        description="Show a model's components and parameter counts. Presets are built on the "
        "meta device, so even medisee-7b is counted without allocating its weights.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="'default' or the path of a MediSee checkpoint folder")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named architecture, without weights")
    parser.add_argument("--memory", action="store_true",
                        help="also the memory each precision needs (fp32, bf16, 8-bit, 4-bit), from the parameter counts")
    parser.set_defaults(run=run)


def components(model: MediSeeModel) -> list[tuple[str, torch.nn.Module]]:
    return [
        ("CLIP vision tower", model.mllm.vision_tower),
        ("multimodal projector", model.mllm.mm_projector),
        ("language model (with LoRA)", model.mllm.language_model),
        ("router R_s (seg)", model.router_seg),
        ("router R_d (box)", model.router_box),
        ("seg projection", model.text_hidden_fcs),
        ("box decoder", model.bbox_decoder),
        ("SAM image encoder", model.mask_head.sam.vision_encoder),
        ("SAM prompt encoder", model.mask_head.sam.prompt_encoder),
        ("SAM mask decoder", model.mask_head.sam.mask_decoder),
        *([("visual prompt encoder (MIMO)", model.prompt_encoder)] if model.prompt_encoder is not None else []),
        *([("input aligner (MIMO)", model.input_aligner)] if model.input_aligner is not None else []),
        *([("patch head" + ("" if model.config.visual_tags else " (training only)"), model.patch_head)]
          if model.patch_head is not None else []),
        *([("query head", model.query_head)] if model.query_head is not None else []),
    ]


def describe(config: MediSeeConfig, model: MediSeeModel, title: str) -> str:
    configure_trainable(model)
    lines = [f"{title}", f"  preset/architecture: {config.name}"]
    t, c, s = config.text, config.clip, config.sam
    lines.append(f"  language model: Mistral, hidden {t.hidden_size}, {t.num_hidden_layers} layers, "
                 f"{t.num_attention_heads} heads ({t.num_key_value_heads} KV), vocab {t.vocab_size}")
    lines.append(f"  CLIP: {c.image_size}px, patch {c.patch_size}, width {c.hidden_size}, {c.num_hidden_layers} layers, "
                 f"features from layer {c.feature_layer} -> {c.num_patches} image tokens")
    lines.append(f"  SAM: {s.image_size}px, width {s.hidden_size}, {s.num_hidden_layers} layers, "
                 f"embedding {s.prompt_dim}x{s.embedding_size}x{s.embedding_size}")
    v = config.visual_prompts
    lines.append("  visual prompts: none (a box/point only prompts the mask head)" if v is None else
                 f"  visual prompts: box + {v.max_points} point(s), "
                 + (f"aligner with {v.num_queries} queries x {v.aligner_layers} layers" if v.aligner else "no aligner")
                 + (", region tokens" if v.region_features else "")
                 + f" -> {v.num_slot_tokens} extra image-slot tokens")
    if config.patch_classes:
        lines.append(f"  patch head: {len(config.patch_classes)} structures ({', '.join(config.patch_classes)})"
                     + (f"; {config.num_tag_tokens} visual-tag tokens in the image slot" if config.visual_tags else ""))
    if config.query_tags:
        lines.append(f"  query tags: a query head on the frozen {config.sentence_encoder} sentence embedding of the "
                     f"question -> {len(config.patch_classes)} tokens" + ("; scores gated by it" if config.query_gate else ""))
    lines.append(f"  score threshold: {config.score_threshold:g} (below it no entity is reported)")
    lines.append("  boxes: " + ("the tight box of each mask" if config.box_source == "mask" else "the box decoder's"))
    lines.append(f"  candidate tokens: {' '.join(config.candidate_tokens)} (routers see {' '.join(config.router_input_order)})")
    lines.append(f"  {'component':34s} {'parameters':>15s} {'trainable':>15s}")
    for name, module in components(model):
        lines.append(f"  {name:34s} {count_parameters(module):>15,d} {count_parameters(module, True):>15,d}")
    lines.append(f"  {'total':34s} {count_parameters(model):>15,d} {count_parameters(model, True):>15,d}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.preset:
        config = preset(args.preset)
        ids = tuple(range(config.text.vocab_size - config.num_candidates, config.text.vocab_size))
        with torch.device("meta"):
            model = MediSeeModel(config, ids)
        print(describe(config, model, f"MediSee preset {args.preset} (architecture only, no weights)"))
        if args.memory:
            print(memory_table(model, config))
        return 0
    loaded = load_model(args.model)
    title = f"MediSee model {loaded.name}" + ("" if loaded.trained else " [UNTRAINED]")
    print(describe(loaded.bundle.config, loaded.bundle.model, title))
    if args.memory:
        print(memory_table(loaded.bundle.model, loaded.bundle.config))
    if loaded.note:
        print(f"  note: {loaded.note}")
    return 0
