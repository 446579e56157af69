"""Which checkpoint the server answers with, loaded once, swapped atomically after retraining.

The served checkpoint is named by a pointer file (``<models_dir>/served.json``); without one
it is the configured ``weights``. Retraining runs in a separate process (MONAI Label starts
one per training run): it copies an accepted checkpoint into ``models_dir`` and replaces the
pointer with one ``os.replace``, and the server notices the new pointer on its next request.
The model is loaded lazily, so processes that never infer (training) never load it, and all
inference goes through one lock: concurrent requests queue instead of sharing the model.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

from medisee.atomic import write_json
from medisee.models import DEFAULT, LoadedModel, default_model_dir, load_model
from medisee.predictor import Predictor

from .settings import AppSettings

log = logging.getLogger("medisee.server.model")
POINTER = "served.json"


class ServedModel:
    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._predictor: Predictor | None = None
        self._pointer_stamp: tuple[float, int] | None = None

    @property
    def pointer(self) -> Path:
        return self.settings.models_dir / POINTER

    def current(self) -> str:
        """The checkpoint to serve: the last accepted retraining, else the configured weights."""
        try:
            served = json.loads(self.pointer.read_text())["path"]
        except FileNotFoundError:
            return self.settings.weights
        except (OSError, ValueError, KeyError) as err:
            log.error("ignoring unreadable %s (%s); serving %s", self.pointer, err, self.settings.weights)
            return self.settings.weights
        if not Path(served).is_dir():
            log.error("%s names %s, which is missing; serving %s", self.pointer, served, self.settings.weights)
            return self.settings.weights
        return served

    def current_dir(self) -> Path:
        """The folder of the served checkpoint (retraining starts from it)."""
        spec = self.current()
        return default_model_dir() if spec == DEFAULT else Path(spec)

    def predictor(self) -> Predictor:
        """The predictor for the served checkpoint, (re)loaded when the pointer changed.
        Call with ``self.lock`` held."""
        stamp = self._stamp()
        if self._predictor is None or stamp != self._pointer_stamp:
            spec = self.current()
            started = time.perf_counter()
            loaded = load_model(spec, device=self.settings.torch_device, dtype=self.settings.dtype)
            if not loaded.trained:
                log.warning("serving an untrained model: %s", loaded.note)
            self._loaded = loaded
            self._predictor = Predictor(loaded.bundle, score_threshold=self.settings.threshold,
                                        batch_size=self.settings.batch_size)
            self._pointer_stamp = stamp
            log.info("loaded model %s on %s (%s) in %.1f s", loaded.name, self.settings.torch_device,
                     self.settings.precision, time.perf_counter() - started)
        return self._predictor

    @property
    def name(self) -> str:
        return self._loaded.name if self._loaded else self.current()

    def swap(self, new_model: Path, report: dict) -> Path:
        """Copy ``new_model`` into ``models_dir`` (under a temporary name, then renamed) and
        point the server at it. Returns the served folder."""
        models_dir = self.settings.models_dir
        models_dir.mkdir(parents=True, exist_ok=True)
        target = models_dir / time.strftime("medisee-%Y%m%d-%H%M%S")
        if target.exists():
            target = target.with_name(f"{target.name}-{time.time_ns() % 1_000_000:06d}")
        staging = models_dir / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(new_model, staging)
        staging.rename(target)
        write_json(self.pointer, {"path": str(target.resolve()), "previous": self.current(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "report": report})
        log.info("now serving %s", target)
        return target

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.pointer.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime, stat.st_ino
