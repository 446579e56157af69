"""The language model's cached continuation scoring against plain teacher forcing."""

from __future__ import annotations

import pytest
import torch


def teacher_forced(mllm, embeds, mask, tokens, shared):
    """log P(tokens[shared:] | prompt, tokens[:shared]) by running every sequence whole."""
    lm = mllm.language_model
    ids = torch.tensor(tokens)
    full = torch.cat([embeds, lm.get_input_embeddings()(ids)[None]], dim=1)
    full_mask = torch.cat([mask, torch.ones(1, len(tokens), dtype=mask.dtype)], dim=1)
    logits = mllm.logits(mllm.hidden_states(full, full_mask)).float()
    log_probs = torch.log_softmax(logits[0, embeds.shape[1] - 1 : -1], dim=-1)
    return log_probs[torch.arange(len(tokens)), ids][shared:].sum()


def test_continuations_score_as_teacher_forcing_does(tiny_shared):
    mllm = tiny_shared.model.mllm
    torch.manual_seed(0)
    width = mllm.language_model.config.hidden_size
    embeds = torch.randn(2, 7, width) * 0.02
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    continuations = [[5, 6, 7], [5, 8], [5, 6, 9, 10]]  # token 5 is shared: its probability is left out
    with torch.no_grad():
        got = mllm.continuation_log_probs(embeds, mask, continuations)
        for b in range(2):
            keep = mask[b].bool()
            for k, tokens in enumerate(continuations):
                expected = teacher_forced(mllm, embeds[b : b + 1, keep], mask[b : b + 1, keep], tokens, shared=1)
                assert got[b, k].item() == pytest.approx(expected.item(), abs=1e-4)
