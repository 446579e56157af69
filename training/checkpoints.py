"""Resumable training checkpoints, written so that a kill at any moment loses nothing that
was reported saved.

DeepSpeed writes its engine state (model, optimizer, scheduler) into a staging folder; the
finished folder is renamed into ``checkpoints/<tag>`` and only then does ``state.json``
(step, tag, metrics) move to point at it, via a temporary file and ``os.replace``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medisee.atomic import write_json

STATE_FILE = "state.json"


@dataclass
class RunState:
    step: int  # optimizer steps completed
    tag: str  # DeepSpeed checkpoint tag holding that step
    history: list[dict] = field(default_factory=list)  # evaluation summaries so far


def checkpoint_root(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def read_state(output_dir: Path) -> RunState | None:
    """The last completed checkpoint of a run, or None for a fresh run."""
    file = checkpoint_root(output_dir) / STATE_FILE
    if not file.exists():
        return None
    data = json.loads(file.read_text())
    state = RunState(**data)
    if not (checkpoint_root(output_dir) / state.tag).is_dir():
        raise FileNotFoundError(f"{file} points at checkpoint {state.tag}, which is missing")
    return state


def save(engine, output_dir: Path, state: RunState, is_main: bool, barrier, keep: int = 2) -> None:
    """Save the engine under ``state.tag`` atomically, then record ``state``."""
    root = checkpoint_root(output_dir)
    staging = root / ".staging"
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    engine.save_checkpoint(str(staging), tag=state.tag, save_latest=False)
    barrier()
    if is_main:
        final = root / state.tag
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging / state.tag, final)
        shutil.rmtree(staging, ignore_errors=True)
        write_json(root / STATE_FILE, asdict(state))
        _prune(root, keep, state.tag)
    barrier()


def _prune(root: Path, keep: int, current: str) -> None:
    tags = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step"))
    for old in tags[:-keep] if keep > 0 else []:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)

