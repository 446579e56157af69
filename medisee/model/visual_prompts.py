"""MIMO's visual referring input (MIMO section 3.2.1): the prompt encoder and the
multi-modal input aligner.

A box becomes two corner tokens and each point one token, encoded as SAM's prompt
encoder does: a random Fourier positional encoding of the normalised coordinates summed
with a learned embedding of the prompt's type (box corner 1, box corner 2, point, or "not
a prompt" for absent ones, so the token count is fixed), then projected to the language
model's width. The aligner's learnable queries cross-attend to the image tokens, the
question's token embeddings and the prompt tokens together, so the LLM receives image
information picked out by the text and the drawn prompt.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import VisualPromptConfig

BOX_START, BOX_END, POINT, NOT_A_PROMPT = range(4)
IMAGE_SOURCE, TEXT_SOURCE, PROMPT_SOURCE = range(3)


class VisualPromptEncoder(nn.Module):
    """(B, 4) boxes and (B, P, 2) points, normalised to [0, 1] (NaN: absent) -> (B, 2 + P, hidden)."""

    def __init__(self, config: VisualPromptConfig, hidden: int) -> None:
        super().__init__()
        if config.embed_dim % 2:
            raise ValueError("visual_prompts.embed_dim must be even (sine and cosine halves)")
        self.max_points = config.max_points
        # fixed, never trained (as segment-anything's PositionEmbeddingRandom); saved with the weights
        self.register_buffer("positional_gaussian", torch.randn(2, config.embed_dim // 2))
        self.type_embeddings = nn.Embedding(4, config.embed_dim)
        self.project = nn.Sequential(nn.Linear(config.embed_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def positional_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., embed_dim) sines and cosines."""
        projected = (2 * coords - 1) @ self.positional_gaussian.to(coords.dtype) * (2 * math.pi)
        return torch.cat([projected.sin(), projected.cos()], dim=-1)

    def forward(self, boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        batch = boxes.shape[0]
        if boxes.shape != (batch, 4) or points.shape[0] != batch or points.shape[-1] != 2 or points.ndim != 3:
            raise ValueError(f"expected boxes (B, 4) and points (B, P, 2), got {tuple(boxes.shape)} and {tuple(points.shape)}")
        if points.shape[1] > self.max_points:
            raise ValueError(f"{points.shape[1]} points given; this model takes at most {self.max_points}")
        if points.shape[1] < self.max_points:
            padding = points.new_full((batch, self.max_points - points.shape[1], 2), float("nan"))
            points = torch.cat([points, padding], dim=1)
        coords = torch.cat([boxes.reshape(batch, 2, 2), points], dim=1)  # (B, 2 + P, 2)
        present = ~torch.isnan(coords).any(-1)
        types = torch.tensor([BOX_START, BOX_END] + [POINT] * self.max_points, device=coords.device)
        types = torch.where(present, types.expand(batch, -1), torch.full_like(present, NOT_A_PROMPT, dtype=torch.long))
        encoded = self.positional_encoding(torch.nan_to_num(coords, nan=0.5)) * present.unsqueeze(-1)
        return self.project(encoded + self.type_embeddings(types).to(encoded.dtype))


class AlignerLayer(nn.Module):
    """Queries attend to each other, then to the multi-modal input, then an MLP (pre-norm)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden)
        self.self_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden)
        self.cross_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(self, queries: torch.Tensor, inputs: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
        x = self.self_norm(queries)
        queries = queries + self.self_attention(x, x, x, need_weights=False)[0]
        x = self.cross_norm(queries)
        queries = queries + self.cross_attention(x, inputs, inputs, key_padding_mask=ignore, need_weights=False)[0]
        return queries + self.mlp(self.mlp_norm(queries))


class InputAligner(nn.Module):
    """Learnable queries x [image tokens; question embeddings; prompt tokens] -> (B, Q, hidden)."""

    def __init__(self, config: VisualPromptConfig, hidden: int) -> None:
        super().__init__()
        if hidden % config.aligner_heads:
            raise ValueError(f"the LLM width {hidden} is not divisible by aligner_heads={config.aligner_heads}")
        self.queries = nn.Parameter(torch.randn(config.num_queries, hidden) * 0.02)
        self.source_embeddings = nn.Embedding(3, hidden)  # image, text, prompt
        self.input_norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(AlignerLayer(hidden, config.aligner_heads) for _ in range(config.aligner_layers))
        self.output_norm = nn.LayerNorm(hidden)
        self.project = nn.Linear(hidden, hidden)  # the linear projection before the LLM

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """``text_mask`` (B, T) is True at the question's tokens; the rest is not attended."""
        batch = image.shape[0]
        sources = torch.cat([
            image + self.source_embeddings.weight[IMAGE_SOURCE],
            text + self.source_embeddings.weight[TEXT_SOURCE],
            prompts + self.source_embeddings.weight[PROMPT_SOURCE],
        ], dim=1)
        keep = torch.cat([
            torch.ones(image.shape[:2], dtype=torch.bool, device=image.device),
            text_mask.bool(),
            torch.ones(prompts.shape[:2], dtype=torch.bool, device=image.device),
        ], dim=1)
        inputs = self.input_norm(sources)
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1).to(inputs.dtype)
        for layer in self.layers:
            queries = layer(queries, inputs, ~keep)
        return self.project(self.output_norm(queries))
