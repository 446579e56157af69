"""Outputs of a frozen image encoder, remembered by the content of their input.

Training draws the same few hundred slices thousands of times; once the SAM-like image
encoder is frozen its embedding of a slice never changes, and computing it (about 40 ms a
slice on two CPU cores, three times that with the backward pass while it trained) was
most of a training step. Keys are digests of the preprocessed pixels, so an augmented or
different slice is simply a miss: a stale hit is impossible as long as the encoder stays
frozen, which ``MaskHead.encode_image`` checks before it asks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch


class FrozenEncoderCache:
    def __init__(self, max_items: int = 2048) -> None:
        if max_items <= 0:
            raise ValueError("max_items must be positive")
        self.max_items = max_items
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def key(pixels: torch.Tensor) -> bytes:
        """A digest of one input (its shape and values)."""
        data = pixels.detach().to("cpu", torch.float32).contiguous()
        digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
        digest.update(repr(tuple(data.shape)).encode())
        return digest.digest()

    def encode(self, batch: torch.Tensor, encoder: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``encoder(batch)``, computing only the rows not seen before (without gradients)."""
        keys = [self.key(row) for row in batch]
        missing = [i for i, key in enumerate(keys) if key not in self._items]
        if missing:
            with torch.no_grad():
                fresh = encoder(batch[missing])
            for i, embedding in zip(missing, fresh):
                self._items[keys[i]] = embedding.detach().clone()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        out = torch.stack([self._items[key] for key in keys])
        for key in keys:
            self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return out

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
