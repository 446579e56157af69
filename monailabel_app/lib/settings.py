"""The app's configuration, read from MONAI Label's ``--conf KEY VALUE`` options.

Every value is checked when the server starts, so a typo stops it with a message that
names the option instead of failing on the first request."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medisee.predictor import MODES

from .policy import GROUPS

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


class SettingsError(ValueError):
    """A ``--conf`` value the app cannot use."""


@dataclass(frozen=True)
class AppSettings:
    weights: str = "default"  # "default" = the bundled tiny model, or a MediSee checkpoint folder
    device: str = "cpu"
    precision: str = "fp32"
    threshold: float | None = None  # None: the model's own (chosen on validation data when it was built)
    batch_size: int = 8
    mode: str = "full"  # default inference mode; a request may ask for "fast"
    models_dir: Path = Path("model")  # retrained checkpoints and the served-model pointer
    retrain_steps: int = 60
    max_query_chars: int = 2000
    enable: frozenset[str] = frozenset()  # endpoint groups turned on beyond the product's own (policy.GROUPS)
    max_upload_mb: int = 1024  # the largest request body (an uploaded study or label), in MiB
    image_folders: tuple[Path, ...] = ()  # server folders whose files an image id may name by path

    @property
    def torch_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def scratch_dir(self) -> Path:
        """Uploads and answer files while their request runs (swept at start-up)."""
        return self.models_dir / "scratch"

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @classmethod
    def from_conf(cls, conf: dict[str, str], app_dir: str | Path) -> AppSettings:
        known = {"weights", "device", "precision", "threshold", "batch_size", "mode", "models_dir",
                 "retrain_steps", "max_query_chars", "enable", "max_upload_mb", "image_folders"}
        unknown = sorted(k for k in conf if k not in known and not k.startswith(("models", "server_mode", "preload")))
        if unknown:
            raise SettingsError(f"unknown --conf option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        weights = conf.get("weights", "default")
        if weights != "default" and not Path(weights).is_dir():
            raise SettingsError(f"--conf weights {weights!r}: use 'default' or the folder of a MediSee checkpoint")
        device = conf.get("device", "cpu")
        if device not in DEVICES and not device.startswith("cuda:"):
            raise SettingsError(f"--conf device {device!r}: choose {', '.join(DEVICES)} (or cuda:N)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SettingsError(f"--conf device {device}: no CUDA device is available here; use cpu or auto")
        precision = conf.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise SettingsError(f"--conf precision {precision!r}: choose {', '.join(PRECISIONS)}")
        mode = conf.get("mode", "full")
        if mode not in MODES:
            raise SettingsError(f"--conf mode {mode!r}: choose {', '.join(MODES)}")
        models_dir = Path(conf.get("models_dir") or Path(app_dir) / "model")
        enable = frozenset(g.strip() for g in (conf.get("enable") or "").split(",") if g.strip())
        if enable - set(GROUPS):
            raise SettingsError(f"--conf enable {', '.join(sorted(enable - set(GROUPS)))}: unknown endpoint group; "
                                f"known: {', '.join(GROUPS)}")
        folders = tuple(Path(f).resolve() for f in (conf.get("image_folders") or "").split(os.pathsep) if f)
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise SettingsError(f"--conf image_folders: no such folder {', '.join(missing)}")
        return cls(
            weights=weights, device=device, precision=precision, mode=mode, models_dir=models_dir,
            threshold=_number(conf, "threshold", float, 0.0, 1.0),
            batch_size=_number(conf, "batch_size", int, 1, 256) or 8,
            retrain_steps=_number(conf, "retrain_steps", int, 1, 100_000) or 60,
            max_query_chars=_number(conf, "max_query_chars", int, 1, 100_000) or 2000,
            enable=enable, image_folders=folders,
            max_upload_mb=_number(conf, "max_upload_mb", int, 1, 1_000_000) or 1024,
        )


def _number(conf: dict[str, str], key: str, kind: type, low: float, high: float):
    if key not in conf or conf[key] in ("", None):
        return None
    try:
        value = kind(conf[key])
    except ValueError:
        raise SettingsError(f"--conf {key} {conf[key]!r}: expected a{'n integer' if kind is int else ' number'}") from None
    if not low <= value <= high:
        raise SettingsError(f"--conf {key} {value}: must be between {low:g} and {high:g}")
    return value
