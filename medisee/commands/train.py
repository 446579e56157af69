"""``medisee train --config FILE``: run a training configuration (code in ``training/``)."""

from __future__ import annotations

import argparse


def register(commands) -> None:
    parser = commands.add_parser(
        "train", help="train or fine-tune MediSee with DeepSpeed from a config file",
        description="Train MediSee from a YAML config (see training/configs/). Runs single-process on a CPU; "
        "for several GPUs use: deepspeed --module training.train --config FILE. Starting the same "
        "config again resumes from its last checkpoint.",
    )
    parser.add_argument("--config", required=True, help="training config file (YAML)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.train import run as train

    result = train(load_config(args.config), show_progress=not args.no_progress)
    print(f"trained {result.step} steps; model in {result.model_dir}")
    if result.metrics:
        print("validation: " + ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if isinstance(v, float)))
    return 0
