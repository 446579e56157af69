"""The frozen-encoder cache: equal to encoding every time, computing only what it has not seen."""

from __future__ import annotations

import pytest
import torch

from medisee.config import preset
from medisee.model.frozen_encoder_cache import FrozenEncoderCache
from medisee.model.seg_head import MaskHead


class CountingEncoder:
    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.rows += len(batch)
        return batch.mean(dim=1, keepdim=True) * 2


def test_only_unseen_rows_are_encoded_and_results_match():
    cache, encoder = FrozenEncoderCache(), CountingEncoder()
    first, second = torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert torch.equal(cache.encode(first, encoder), encoder(first))
    encoder.rows = 0
    batch = torch.cat([second, first[1:], first[:1]])
    assert torch.equal(cache.encode(batch, encoder), batch.mean(dim=1, keepdim=True) * 2)
    assert encoder.rows == 1 and (cache.hits, cache.misses) == (2, 3) and len(cache) == 3
    assert cache.hit_rate() == pytest.approx(0.4)


def test_a_changed_pixel_is_a_miss_and_the_oldest_entries_go_first():
    cache, encoder = FrozenEncoderCache(max_items=2), CountingEncoder()
    a, b, c = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), torch.full((1, 3, 4, 4), 2.0)
    cache.encode(a, encoder)
    changed = a.clone()
    changed[0, 0, 0, 0] = 1e-6
    cache.encode(changed, encoder)
    assert cache.misses == 2
    cache.encode(a, encoder)  # a is now the most recent
    cache.encode(b, encoder)  # evicts the changed copy, not a
    cache.encode(c, encoder)  # evicts a
    assert len(cache) == 2 and cache.misses == 4
    cache.encode(torch.cat([b, c]), encoder)
    assert cache.misses == 4
    cache.encode(a, encoder)
    assert cache.misses == 5
    with pytest.raises(ValueError):
        FrozenEncoderCache(max_items=0)


def test_the_mask_head_uses_the_cache_only_while_its_encoder_is_frozen():
    torch.manual_seed(0)
    head = MaskHead(preset("tiny").sam).eval()
    pixels = torch.rand(2, 3, head.config.image_size, head.config.image_size)
    with torch.no_grad():
        direct = head.encode_image(pixels)
    head.frozen_cache = FrozenEncoderCache()
    with torch.no_grad():
        trained = head.encode_image(pixels)  # encoder still trainable: the cache stays out of it
    assert len(head.frozen_cache) == 0 and torch.equal(trained, direct)
    head.sam.vision_encoder.requires_grad_(False)
    cached = head.encode_image(pixels)
    assert torch.allclose(cached, direct, atol=1e-6) and len(head.frozen_cache) == 2
    assert torch.equal(head.encode_image(pixels), cached) and head.frozen_cache.hits == 2
