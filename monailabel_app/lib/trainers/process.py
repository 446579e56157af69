"""The retraining process's bonds to its server: one retraining at a time per models
folder, across restarts, and none outliving the server that started it.

MONAI Label runs each training in a child process. Its own bookkeeping lives in the
server's memory, so after a restart it says nothing runs while the old child trains on,
and a second training can start beside it; and a child of a killed server used to finish
and swap the served model behind the new server's back."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("medisee.server.train")
LOCK = "training.lock"


TASK_MODULE = "monailabel.interfaces.utils.app"  # what MONAI Label runs as a training process


def in_training_process() -> bool:
    """Whether this is the process MONAI Label started for a training (not the server)."""
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", "") == TASK_MODULE


class TrainingBusy(RuntimeError):
    """Another retraining holds the models folder."""


@contextmanager
def exclusive_training(models_dir: Path) -> Iterator[None]:
    """Hold ``models_dir``'s training lock for the block (a kernel lock: it goes with the
    process that holds it, however that process ends)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise TrainingBusy(f"another retraining is running ({handle.read().strip() or 'unknown process'}); "
                               "wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def end_with_parent(poll_s: float = 1.0) -> threading.Thread:
    """Watch the process that started this one; when it is gone (stopped or killed), end
    this process at once: its retraining must not outlive the server or swap its model."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("the server that started this retraining (process %d) is gone: stopping", parent)
        os._exit(3)

    watcher = threading.Thread(target=watch, name="medisee-parent-watch", daemon=True)
    watcher.start()
    return watcher
