"""Image preprocessing for the two vision branches (SAM/MedSAM and CLIP).

Inputs are display-ready uint8 images (already windowed): tensors of shape (B, 3, H, W).
Two ways to resize (``MediSeeConfig.image_resize``): "torch" (ours: float, antialiased,
a batch in one call) or "pil" (the reference: uint8 PIL resizes, bilinear as
segment-anything's ``ResizeLongestSide``, bicubic as the CLIP image processor, with their
size arithmetic), so the released weights see the pixels they were trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """SAM's resize-longest-side target shape (same rounding as segment-anything)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def pil_resize(images: torch.Tensor, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, h, w), each image resized by PIL."""
    out = [np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).resize((size[1], size[0]), resample))
           for image in images.cpu()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def sam_preprocess(
    images: torch.Tensor, long_side: int, mean: tuple[float, ...], std: tuple[float, ...], resize: str = "torch"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize the longest side to ``long_side``, normalise on the 0-255 scale, zero-pad
    bottom/right to a square. Returns the pixels and the resized (h, w) before padding."""
    _, _, h, w = images.shape
    new_h, new_w = resized_shape(h, w, long_side)
    if resize == "pil":
        x = pil_resize(images, (new_h, new_w), Image.Resampling.BILINEAR).float()
    else:
        x = images.float()
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean_t) / std_t
    x = F.pad(x, (0, long_side - new_w, 0, long_side - new_h))
    return x, (new_h, new_w)


def clip_preprocess(
    images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...], pad_to_square: bool,
    resize: str = "torch",
) -> torch.Tensor:
    """CLIP input at ``size``: pad to a square with the mean colour (LLaVA's expand2square),
    or resize the short side and centre-crop as the CLIP processor does."""
    if resize == "pil":
        return _clip_preprocess_pil(images, size, mean, std, pad_to_square)
    x = images.float() / 255.0
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    _, _, h, w = x.shape
    if pad_to_square:
        side = max(h, w)
        canvas = mean_t.expand(x.shape[0], 3, side, side).clone()
        top, left = (side - h) // 2, (side - w) // 2
        canvas[:, :, top : top + h, left : left + w] = x
        x = canvas
    else:
        x = F.interpolate(x, size=clip_resized_shape(h, w, size, "torch"), mode="bicubic", align_corners=False,
                          antialias=True)
        _, _, h2, w2 = x.shape
        top, left = (h2 - size) // 2, (w2 - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (x.clamp(0, 1) - mean_t) / std_t


def _clip_preprocess_pil(
    images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...], pad_to_square: bool
) -> torch.Tensor:
    """The reference's CLIP input: (LLaVA's expand2square with the mean colour, then) the
    CLIP image processor: PIL bicubic resize of the short side to ``size`` (the long side
    truncated), centre crop, rescale in float64, normalise in float32."""
    if pad_to_square:
        _, _, h, w = images.shape
        side = max(h, w)
        fill = torch.tensor([int(m * 255) for m in mean], dtype=torch.uint8).view(1, 3, 1, 1)
        canvas = fill.expand(images.shape[0], 3, side, side).clone()
        top, left = (side - h) // 2, (side - w) // 2
        canvas[:, :, top : top + h, left : left + w] = images
        images = canvas
    _, _, h, w = images.shape
    new_h, new_w = clip_resized_shape(h, w, size, "pil")
    x = pil_resize(images, (new_h, new_w), Image.Resampling.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = (x[:, :, top : top + size, left : left + size].double() * (1 / 255)).float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def clip_resized_shape(h: int, w: int, size: int, resize: str) -> tuple[int, int]:
    """(h, w) after the short side is resized to ``size``: the long side rounded (ours) or
    truncated (the CLIP image processor, "pil")."""
    if resize == "pil":
        return (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    scale = size / min(h, w)
    return max(size, round(h * scale)), max(size, round(w * scale))


def postprocess_masks(
    low_res: torch.Tensor, input_size: int, resized: tuple[int, int], original: tuple[int, int]
) -> torch.Tensor:
    """Low-resolution mask logits (N, 1, h, w) -> logits (N, H, W) at the original size:
    upsample to the padded square, crop the padding, resize to the original."""
    x = F.interpolate(low_res.float(), size=(input_size, input_size), mode="bilinear", align_corners=False)
    x = x[..., : resized[0], : resized[1]]
    x = F.interpolate(x, size=original, mode="bilinear", align_corners=False)
    return x[:, 0]


def to_rgb_tensor(image_u8) -> torch.Tensor:
    """A (H, W) or (H, W, 3) uint8 array -> (3, H, W) uint8 tensor."""
    t = torch.tensor(np.asarray(image_u8))  # a copy: inputs may be read-only views
    if t.ndim == 2:
        t = t.unsqueeze(-1).expand(*t.shape, 3)
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"expected a 2D grayscale or RGB image, got shape {tuple(t.shape)}")
    return t.permute(2, 0, 1).contiguous()


def to_clip_frame(coords: torch.Tensor, original: tuple[int, int], size: int, pad_to_square: bool,
                  resize: str = "torch") -> torch.Tensor:
    """(..., 2) normalised (x, y) of an (h, w) image -> normalised (x, y) on the CLIP input
    canvas, following ``clip_preprocess`` (centred padding, or resize + centre crop), so
    prompts and CLIP patches share one frame."""
    h, w = original
    if pad_to_square:
        side = max(h, w)
        offset = coords.new_tensor([(side - w) // 2, (side - h) // 2])
        return (offset + coords * coords.new_tensor([w, h])) / side
    h2, w2 = clip_resized_shape(h, w, size, resize)
    offset = coords.new_tensor([(w2 - size) // 2, (h2 - size) // 2])
    return (coords * coords.new_tensor([w2, h2]) - offset) / size


def structure_coverage(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """(K, h, w) masks -> (grid * grid, K): the share of each cell of a grid laid over the
    image (row by row) that each mask covers: the patch head's target."""
    return F.adaptive_avg_pool2d(masks.float().unsqueeze(0), grid)[0].flatten(1).T


def image_cells(canvas_map: torch.Tensor, resized: tuple[int, int], long_side: int, grid: int) -> torch.Tensor:
    """(C, e, e) values on SAM's padded canvas -> (C, grid, grid) over the image alone: the
    cells the resized image covers (``sam_preprocess`` pads bottom/right) resampled to a
    square grid, so maps of any image share the image's own normalised frame."""
    side = canvas_map.shape[-1]
    h = max(1, math.ceil(resized[0] * side / long_side))
    w = max(1, math.ceil(resized[1] * side / long_side))
    crop = canvas_map[:, :h, :w].unsqueeze(0)
    if (h, w) == (grid, grid):
        return crop[0]
    return F.interpolate(crop, size=(grid, grid), mode="bilinear", align_corners=False)[0]
