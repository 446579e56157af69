"""Adaptive democratic candidate fusion (paper section 4.2): the routers R_s and R_d."""

from __future__ import annotations

import torch
from torch import nn


class CandidateRouter(nn.Module):
    """Weighs the candidate-token states and returns their weighted sum.

    The gate sees the concatenated candidates; its logits go through a sigmoid and are then
    normalised to sum to one (the released code does this rather than a softmax).
    Parameter names (``gate.0``, ``gate.2``) match the released MediSee checkpoint.
    """

    def __init__(self, hidden_size: int, num_candidates: int, gate_hidden: int) -> None:
        super().__init__()
        self.num_candidates = num_candidates
        self.gate = nn.Sequential(
            nn.Linear(hidden_size * num_candidates, gate_hidden),
            nn.GELU(),
            nn.Linear(gate_hidden, num_candidates),
        )

    def forward(self, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``candidates``: (N, n, H) in router input order -> fused (N, H), weights (N, n)."""
        logits = self.gate(candidates.flatten(1))
        weights = torch.sigmoid(logits)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        fused = (weights.unsqueeze(-1) * candidates).sum(dim=1)
        return fused, weights
