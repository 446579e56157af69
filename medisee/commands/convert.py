"""``medisee convert``: build a MediSee checkpoint folder from the released weights."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ..config import PRESETS, preset
from ..release import ReleasedPaths, assemble
from ..weights import save_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def register(commands) -> None:
    parser = commands.add_parser(
        "convert", help="build a checkpoint from the released LLaVA-Med / MedSAM / CLIP / MediSee weights",
        description="Build a MediSee checkpoint folder from weights you downloaded on a connected machine: "
        "either the released MediSee folder (with --medisee), or the training starting point "
        "LLaVA-Med v1.5 + MedSAM (+ CLIP when the LLaVA-Med folder lacks the vision tower). "
        "The tokenizer always comes from the LLaVA-Med folder. The sizes are read from the downloads "
        "(config.json files, checkpoint tensors); --preset gives the rest (inference settings). "
        "Every file read is listed; --check reads names and shapes only and writes nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--llava-med", required=True, type=Path, help="llava-med-v1.5-mistral-7b folder")
    parser.add_argument("--medsam", type=Path, help="medsam_vit_b.pth")
    parser.add_argument("--clip", type=Path, help="clip-vit-large-patch14-336 folder")
    parser.add_argument("--medisee", type=Path, help="released MediSee folder (*.bin)")
    parser.add_argument("--preset", default="medisee-7b", choices=sorted(PRESETS),
                        help="inference settings and the sizes no download states")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="dtype to store")
    parser.add_argument("--pad-to-square", action="store_true",
                        help="pad CLIP's input to a square (ours) instead of the reference's centre crop, which loses "
                        "the edges of non-square images (the released weights were trained on crops)")
    parser.add_argument("--check", action="store_true",
                        help="check every name and shape against the model without reading a tensor; write nothing")
    parser.add_argument("--out", type=Path, help="checkpoint folder to write (required unless --check)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.out is None and not args.check:
        raise ValueError("give --out (the checkpoint folder to write) or --check")
    paths = ReleasedPaths(llava_med=args.llava_med, medsam=args.medsam, clip=args.clip, medisee=args.medisee)
    config = preset(args.preset)
    if args.pad_to_square:
        config = dataclasses.replace(config, clip=dataclasses.replace(config.clip, pad_to_square=True))
    bundle, reports, shapes = assemble(config, paths, DTYPES[args.dtype], check_only=args.check)
    text = shapes.config.text
    print(f"sizes: language model {text.hidden_size} wide, {text.num_hidden_layers} layers, vocabulary "
          f"{text.vocab_size} (from {shapes.origins['text']}); CLIP from {shapes.origins['clip']}; "
          f"mask head from {shapes.origins['sam']}")
    for file in shapes.files:
        print(f"read {file}")
    for report in reports:
        for file in report.files:
            print(f"read {file}")
        print(f"{report.source}: {len(report.filled)} tensors {'checked' if args.check else 'loaded'}, "
              f"{len(report.ignored)} source keys ignored" + (f", grew {', '.join(report.resized)}" if report.resized else ""))
    if args.check:
        print("check passed: every tensor the model needs is there with the right shape")
        return 0
    trained = args.medisee is not None
    description = ("released MediSee weights" if trained else
                   "LLaVA-Med + MedSAM starting point (routers, heads and LoRA not trained yet)")
    save_checkpoint(bundle, args.out, metadata={"trained": trained, "description": description})
    print(f"wrote {args.out} ({description})")
    return 0
