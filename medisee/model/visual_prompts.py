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
# below this total score a prompt marks nothing clearly: its weights are not scaled up to one
PROMPT_SCORE_FLOOR = 0.05


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
        coords, present = self.coordinates(boxes, points)
        batch = coords.shape[0]
        types = torch.tensor([BOX_START, BOX_END] + [POINT] * self.max_points, device=coords.device)
        types = torch.where(present, types.expand(batch, -1), torch.full_like(present, NOT_A_PROMPT, dtype=torch.long))
        encoded = self.positional_encoding(torch.nan_to_num(coords, nan=0.5)) * present.unsqueeze(-1)
        return self.project(encoded + self.type_embeddings(types).to(encoded.dtype))

    def region_tokens(self, boxes: torch.Tensor, points: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B, 1 + P, hidden): what the prompt covers, read from ``image`` (B, N, hidden),
        the row's CLIP tokens on a square grid in the frame of the coordinates."""
        coords, present = self.coordinates(boxes, points)
        return region_features(image, coords, present)

    def coordinates(self, boxes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2 + P, 2) corners then points, padded to ``max_points`` with NaN, and where they are given."""
        batch = boxes.shape[0]
        if boxes.shape != (batch, 4) or points.shape[0] != batch or points.shape[-1] != 2 or points.ndim != 3:
            raise ValueError(f"expected boxes (B, 4) and points (B, P, 2), got {tuple(boxes.shape)} and {tuple(points.shape)}")
        if points.shape[1] > self.max_points:
            raise ValueError(f"{points.shape[1]} points given; this model takes at most {self.max_points}")
        if points.shape[1] < self.max_points:
            padding = points.new_full((batch, self.max_points - points.shape[1], 2), float("nan"))
            points = torch.cat([points, padding], dim=1)
        coords = torch.cat([boxes.reshape(batch, 2, 2), points], dim=1)
        return coords, ~torch.isnan(coords).any(-1)

    def grid_encoding(self, side: int) -> torch.Tensor:
        """(side * side, embed_dim): the positional encoding of a square grid's cell centres,
        row by row (the order of CLIP's patch tokens)."""
        centres = (torch.arange(side, device=self.positional_gaussian.device, dtype=torch.float32) + 0.5) / side
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        return self.positional_encoding(torch.stack([xs.flatten(), ys.flatten()], dim=-1))


def _grid(image: torch.Tensor) -> int:
    side = int(round(image.shape[1] ** 0.5))
    if side * side != image.shape[1]:
        raise ValueError(f"{image.shape[1]} image tokens do not form a square grid")
    return side


def _box_cells(safe: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side * side) 1 for the cells whose centres lie inside each row's box (corners
    ``safe[:, :2]``), else the one cell nearest the box's centre; row-major."""
    batch = safe.shape[0]
    centres = (torch.arange(side, device=safe.device, dtype=safe.dtype) + 0.5) / side
    x0, y0, x1, y1 = safe[:, 0, 0], safe[:, 0, 1], safe[:, 1, 0], safe[:, 1, 1]
    inside_x = (centres >= x0[:, None]) & (centres <= x1[:, None])  # (B, side)
    inside_y = (centres >= y0[:, None]) & (centres <= y1[:, None])
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).flatten(1).to(safe.dtype)  # (B, N), row-major
    nearest = torch.zeros_like(inside)
    cx = ((x0 + x1) / 2 * side).long().clamp(0, side - 1)
    cy = ((y0 + y1) / 2 * side).long().clamp(0, side - 1)
    nearest[torch.arange(batch), cy * side + cx] = 1.0
    return torch.where(inside.sum(1, keepdim=True) > 0, inside, nearest)


def _sample_points(image: torch.Tensor, safe: torch.Tensor, side: int) -> torch.Tensor:
    """(B, P, C): ``image`` (B, N, C) bilinearly sampled at the points ``safe[:, 2:]``."""
    batch, _, channels = image.shape
    grid = image.transpose(1, 2).reshape(batch, channels, side, side)
    sampled = nn.functional.grid_sample(grid, (safe[:, None, 2:] * 2 - 1), align_corners=False)  # (B, C, 1, P)
    return sampled[:, :, 0].transpose(1, 2)


def _given(present: torch.Tensor) -> torch.Tensor:
    """(B, 1 + P): the box (both corners) and each point, where given."""
    return torch.cat([present[:, :2].all(1, keepdim=True), present[:, 2:]], dim=1)


def region_features(image: torch.Tensor, coords: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, 1 + P, hidden) from (B, 2 + P, 2) corners and points: for the box the mean of the
    image tokens whose cell centres lie inside it (the nearest cell to its centre when none
    does), for each point the bilinearly sampled token under it; zeros for absent prompts."""
    side = _grid(image)
    safe = torch.nan_to_num(coords, nan=0.5).clamp(0, 1)
    weights = _box_cells(safe, side)
    box = (weights.unsqueeze(-1) * image).sum(1) / weights.sum(1, keepdim=True)
    out = torch.cat([box.unsqueeze(1), _sample_points(image, safe, side)], dim=1)
    return out * _given(present).unsqueeze(-1).to(out.dtype)


def prompt_class_weights(probs: torch.Tensor, coords: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, 1 + P, K): which of K structures each prompt marks, from ``probs`` (B, N, K), the
    patch head's per-cell probabilities on a square grid in the frame of ``coords``.

    A box is scored by how much of the box the structure fills times the square of how much
    of the structure the box holds, so the structure the box frames beats neighbours it
    clips and a large organ it sits inside; a point by the probability under it times the
    share of the image the structure leaves free, so the finer of two nested structures
    (grey matter in the brain) wins. Scores are normalised to sum to one per prompt (less
    where nothing is marked); zeros for absent prompts."""
    side = _grid(probs)
    safe = torch.nan_to_num(coords, nan=0.5).clamp(0, 1)
    cells = _box_cells(safe, side).unsqueeze(-1)  # (B, N, 1)
    held = (cells * probs).sum(1)  # (B, K)
    area = probs.sum(1)
    box = (held / cells.sum(1)) * (held / area.clamp(min=1e-6)) ** 2
    points = _sample_points(probs, safe, side) * (1 - area / probs.shape[1]).unsqueeze(1)
    scores = torch.cat([box.unsqueeze(1), points], dim=1)
    scores = scores / scores.sum(-1, keepdim=True).clamp(min=PROMPT_SCORE_FLOOR)
    return scores * _given(present).unsqueeze(-1).to(scores.dtype)


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
        # the image tokens are normalised before their grid positions are added: CLIP
        # features run to norms in the hundreds and would drown the position otherwise
        self.image_norm = nn.LayerNorm(hidden)
        # the image tokens' grid positions, in the prompt encoder's Fourier basis: lets a
        # prompt's query find the patches it covers
        self.image_position_project = nn.Linear(config.embed_dim, hidden)
        self.input_norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(AlignerLayer(hidden, config.aligner_heads) for _ in range(config.aligner_layers))
        self.output_norm = nn.LayerNorm(hidden)
        self.project = nn.Linear(hidden, hidden)  # the linear projection before the LLM

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, prompts: torch.Tensor,
                image_positions: torch.Tensor) -> torch.Tensor:
        """``text_mask`` (B, T) is True at the question's tokens; the rest is not attended.
        ``image_positions`` (N, embed_dim): the positional encoding of each image token's centre."""
        batch = image.shape[0]
        sources = torch.cat([
            self.image_norm(image) + self.source_embeddings.weight[IMAGE_SOURCE]
            + self.image_position_project(image_positions.to(image)),
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
