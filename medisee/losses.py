"""Training objective: eq. 4 (end-to-end) and eq. 5 (fine-tuning similarity) of the paper.

L = ce * CE + bce * BCE + dice * Dice + box * (L1 + GIoU)  [+ js * JS + mse * MSE]
with the weights of ``LossWeights`` (CE 1.0, BCE 2.0, Dice 0.5, box 2.0, JS 2.0, MSE 1.0),
plus our optional ``decision * CE(first answer token)``, ``naming * CE(tokens naming a structure
or following a group)`` and ``patch * BCE(patch head)`` (see ``LossWeights``).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .config import LossWeights
from .boxes import cxcywh_to_xyxy

EPS = 1e-6
PRESENCE_WEIGHT = 0.2  # patch_loss: the multiple-instance term against the per-cell term


def text_ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Auto-regressive cross-entropy over the supervised positions only (already shifted)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


def mask_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE, averaged per mask, then over masks. logits/targets: (N, H, W)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return loss.flatten(1).mean(1).mean()


def mask_dice_loss(logits: torch.Tensor, targets: torch.Tensor, scale: float = 1000.0) -> torch.Tensor:
    """Soft Dice per mask (as the reference: scaled sums, eps 1e-6), averaged over masks."""
    probs = logits.float().sigmoid().flatten(1)
    targets = targets.float().flatten(1)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    return (1 - (numerator + EPS) / (denominator + EPS)).mean()


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU of xyxy boxes (N, 4). Coordinates are put in order and areas get
    an epsilon, so degenerate boxes still give a finite value and a gradient (the reference
    returns a constant for the whole batch when any box is degenerate)."""
    a = torch.cat([torch.minimum(a[:, :2], a[:, 2:]), torch.maximum(a[:, :2], a[:, 2:])], dim=1)
    b = torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], dim=1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    iou = inter / (union + EPS)
    enclosing_wh = torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])
    enclosing = enclosing_wh[:, 0] * enclosing_wh[:, 1]
    return iou - (enclosing - union) / (enclosing + EPS)


def box_loss(pred_cxcywh: torch.Tensor, target_xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 on xyxy, 1 - GIoU), each averaged over boxes; inputs normalised to [0, 1]."""
    pred = cxcywh_to_xyxy(pred_cxcywh.float())
    target = target_xyxy.float()
    l1 = F.l1_loss(pred, target)
    giou = (1 - generalized_iou(pred, target)).mean()
    return l1, giou


def patch_loss(logits: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """BCE between the patch head's logits and the share of each cell each structure covers
    (both (N, cells, classes)); soft targets keep boundaries honest. Plus, per image and
    structure, BCE of the highest cell logit against "any cell covered" (multiple-instance
    learning): per-cell shares alone left small structures below 0.5 everywhere, so the
    highest cell did not say whether the slice shows them. Weighed 0.2: at 1 it won over
    the cells (a cell head reached 80% of covered cells right instead of 88%)."""
    logits, coverage = logits.float(), coverage.float()
    cells = F.binary_cross_entropy_with_logits(logits, coverage)
    present = (coverage.amax(1) > 0).float()
    return cells + PRESENCE_WEIGHT * F.binary_cross_entropy_with_logits(logits.amax(1), present)


def similarity_map(image_states: torch.Tensor, seg_states: torch.Tensor) -> torch.Tensor:
    """Sim(h_img, h_seg): dot products of each image-token state with the seg state,
    scaled by 1/sqrt(H). image_states (G, N, H), seg_states (G, H) -> (G, N)."""
    return torch.einsum("gnh,gh->gn", image_states.float(), seg_states.float()) / math.sqrt(seg_states.shape[-1])


def similarity_loss(reasoning_sim: torch.Tensor, plain_sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """JS divergence between the softmax distributions over image tokens, and MSE between
    the maps; the plain label query's map is the (detached) target (paper eq. 5)."""
    target = plain_sim.detach()
    p = F.softmax(reasoning_sim, dim=-1)
    q = F.softmax(target, dim=-1)
    m = 0.5 * (p + q)
    js = 0.5 * (p * (torch.log(p + EPS) - torch.log(m + EPS))).sum(-1) + 0.5 * (
        q * (torch.log(q + EPS) - torch.log(m + EPS))
    ).sum(-1)
    return js.mean(), F.mse_loss(reasoning_sim, target)


def combine(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted total of whichever terms are present."""
    factors = {
        "ce": weights.ce, "bce": weights.bce, "dice": weights.dice,
        "l1": weights.box, "giou": weights.box, "js": weights.js, "mse": weights.mse,
        "decision": weights.decision, "naming": weights.naming, "patch": weights.patch, "query": weights.query,
    }
    return sum(factors[name] * value for name, value in terms.items())
