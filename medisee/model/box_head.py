"""The 3-layer box decoder G_b^dec: candidate state -> normalised (cx, cy, w, h)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BoxDecoder(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear with a sigmoid; the last layer starts at zero so the
    first boxes are centred half-size boxes (0.5, 0.5, 0.5, 0.5). Names match ``layers.N``
    of the released checkpoint."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 4)]
        )
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, 4) boxes as (cx, cy, w, h), each in [0, 1] of image width/height."""
        x = states
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return torch.sigmoid(self.layers[-1](x))

