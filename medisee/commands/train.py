"""``medisee train --config FILE``: run a training configuration with the training program
(``python -m training.train``, which this process becomes: the model library does not import
the training code that sits above it)."""

from __future__ import annotations

import argparse
import os
import sys


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
    command = [sys.executable, "-m", "training.train", "--config", args.config]
    os.execv(sys.executable, command + (["--no-progress"] if args.no_progress else []))
