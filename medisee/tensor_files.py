"""Weight files read lazily: names and shapes first, each tensor only when it is copied.

A released 7B folder holds about 15 GB of tensors. Reading it whole before copying (as a
plain ``torch.load`` does) doubles the peak memory; checking a download's layout should
need none of it. ``TensorFiles`` takes names and shapes from the safetensors headers, or
from a pickle loaded onto the meta device, and reads a tensor when it is asked for
(safetensors one by one, pickles memory-mapped).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the key."""


class TensorFiles(Mapping[str, torch.Tensor]):
    """Every tensor of a ``.safetensors``/``.bin``/``.pth`` file or of every such file in a
    folder, by name (a later shard's name wins, as ``dict.update`` would)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise WeightsError(f"{path}: no such file or folder")
        self.files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if not self.files:
            raise WeightsError(f"{path}: no .safetensors, .bin or .pth weight files found")
        self._where: dict[str, tuple[Path, str]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for file in self.files:
            for key, shape in _shapes(file).items():
                self._where[key] = (file, key)
                self._shapes[key] = shape
        self._pickles: dict[Path, dict[str, torch.Tensor]] = {}

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def file_of(self, key: str) -> Path:
        return self._where[key][0]

    def renamed(self, rename: Callable[[str], str]) -> "TensorFiles":
        """The same tensors under ``rename(key)``; two keys that become one are an error."""
        out = object.__new__(TensorFiles)
        out.files, out._pickles, out._where, out._shapes = self.files, self._pickles, {}, {}
        for key, (file, stored) in self._where.items():
            new = rename(key)
            if new in out._where:
                raise WeightsError(f"{file}: both {out._where[new][1]} and {stored} are present (the same weight twice)")
            out._where[new], out._shapes[new] = (file, stored), self._shapes[key]
        return out

    def __getitem__(self, key: str) -> torch.Tensor:
        file, stored = self._where[key]
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                return handle.get_tensor(stored)
        if file not in self._pickles:
            self._pickles = {file: _load_pickle(file, "cpu")}  # one shard mapped at a time
        return self._pickles[file][stored]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _shapes(file: Path) -> dict[str, tuple[int, ...]]:
    if file.suffix != ".safetensors":
        return {key: tuple(t.shape) for key, t in _load_pickle(file, "meta").items()}
    try:
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as err:
        raise WeightsError(f"{file}: cannot read weights ({err})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{file}: cannot read weights (no safetensors header)")
    return {key: tuple(entry["shape"]) for key, entry in header.items() if key != "__metadata__"}


def _load_pickle(file: Path, device: str) -> dict[str, torch.Tensor]:
    """A pickled state dict on ``device`` ("meta": shapes only; "cpu": memory-mapped when the
    file allows it), unwrapped from a ``{"model": ...}`` checkpoint."""
    try:
        try:
            part = torch.load(file, map_location=device, weights_only=True, mmap=device == "cpu")
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            part = torch.load(file, map_location=device, weights_only=True)  # an old, non-zip pickle
    except Exception as err:  # torch raises many types for damaged files
        raise WeightsError(f"{file}: cannot read weights ({err})") from None
    if not isinstance(part, dict):
        raise WeightsError(f"{file}: expected a state dict, found {type(part).__name__}")
    if isinstance(part.get("model"), dict):
        part = part["model"]
    return part
