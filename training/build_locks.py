"""Stale locks of PyTorch extension builds, which hang every later training.

DeepSpeed builds a C++ extension (``deepspeed_shm_comm`` on a CPU) the first time it sets up
communication; PyTorch guards the build with a ``lock`` file in the build folder and makes
every other process wait, forever, until it disappears. A process killed while building
leaves it behind. A real build finishes in about a minute, so a lock older than
``STALE_AFTER_S`` belongs to nobody and is removed; a younger one is waited for."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from torch.utils.cpp_extension import get_default_build_root

log = logging.getLogger("medisee.train")
STALE_AFTER_S = 300.0


def extension_build_root() -> Path:
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def clear_stale_build_locks(root: Path | None = None, stale_after_s: float = STALE_AFTER_S,
                            poll_s: float = 1.0) -> list[Path]:
    """Wait for the build locks under ``root`` to go, removing those older than
    ``stale_after_s``; the locks removed."""
    root = root or extension_build_root()
    removed = []
    for lock in [*root.glob("*/lock"), *root.glob("*/*/lock")]:
        while True:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                break  # the build finished
            if age > stale_after_s:
                log.warning("removing %s: a build lock %.0f s old, left by a process killed while building", lock, age)
                lock.unlink(missing_ok=True)
                removed.append(lock)
                break
            log.info("waiting for the extension build holding %s (%.0f s so far)", lock, age)
            time.sleep(poll_s)
    return removed
