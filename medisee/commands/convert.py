"""``medisee convert``: build a MediSee checkpoint folder from the released weights."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ..config import PRESETS, preset
from ..release import ReleasedPaths, assemble
from ..weights import save_checkpoint

log = logging.getLogger("medisee.convert")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def register(commands) -> None:
    parser = commands.add_parser(
        "convert", help="build a checkpoint from the released LLaVA-Med / MedSAM / CLIP / MediSee weights",
        description="Build a MediSee checkpoint folder from weights you downloaded on a connected machine: "
        "either the released MediSee folder (with --medisee), or the training starting point "
        "LLaVA-Med v1.5 + MedSAM (+ CLIP when the LLaVA-Med folder lacks the vision tower). "
        "The tokenizer always comes from the LLaVA-Med folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--llava-med", required=True, type=Path, help="llava-med-v1.5-mistral-7b folder")
    parser.add_argument("--medsam", type=Path, help="medsam_vit_b.pth")
    parser.add_argument("--clip", type=Path, help="clip-vit-large-patch14-336 folder")
    parser.add_argument("--medisee", type=Path, help="released MediSee folder (*.bin)")
    parser.add_argument("--preset", default="medisee-7b", choices=sorted(PRESETS), help="architecture of the weights")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="dtype to store")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    paths = ReleasedPaths(llava_med=args.llava_med, medsam=args.medsam, clip=args.clip, medisee=args.medisee)
    bundle, reports = assemble(preset(args.preset), paths, DTYPES[args.dtype])
    for report in reports:
        log.info("%s: %d tensors loaded, %d source keys ignored%s", report.source, len(report.filled),
                 len(report.ignored), f", grew {', '.join(report.resized)}" if report.resized else "")
    trained = args.medisee is not None
    description = ("released MediSee weights" if trained else
                   "LLaVA-Med + MedSAM starting point (routers, heads and LoRA not trained yet)")
    save_checkpoint(bundle, args.out, metadata={"trained": trained, "description": description})
    print(f"wrote {args.out} ({description})")
    return 0
