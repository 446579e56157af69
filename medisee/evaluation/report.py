"""The worst-case grid of an evaluation: tiles a person can look at, ground truth in green,
prediction in red, boxes as thin rectangles."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WORST_CASES = 16
GRID_COLUMNS = 4
TILE = 256
CAPTION_HEIGHT = 54
GAP = 6
HEADER_HEIGHT = 28
GT_COLOUR = (40, 220, 60)
PRED_COLOUR = (235, 40, 40)


def save_png(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask (in-mask pixels with an out-of-mask 4-neighbour), 2 px wide."""
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = mask & ~interior
    thick = np.pad(edge, 1)
    return edge | thick[:-2, 1:-1] | thick[2:, 1:-1] | thick[1:-1, :-2] | thick[1:-1, 2:]


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def tile(image: np.ndarray, gt_mask: np.ndarray, pred_mask: np.ndarray, gt_box, pred_box,
          caption: list[str]) -> Image.Image:
    """One case: the image fitted in TILE x TILE, prediction filled and outlined in red, ground
    truth outlined in green, boxes as thin rectangles, and a caption underneath."""
    height, width = gt_mask.shape
    scale = TILE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = Image.fromarray(image).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    rgb = np.asarray(base, dtype=np.float32).copy()

    def resized(mask: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0

    pred, gt = resized(pred_mask), resized(gt_mask)
    rgb[pred] = 0.65 * rgb[pred] + 0.35 * np.array(PRED_COLOUR)
    rgb[_outline(pred)] = PRED_COLOUR
    rgb[_outline(gt)] = GT_COLOUR
    picture = Image.fromarray(np.rint(rgb).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for box, colour in ((gt_box, GT_COLOUR), (pred_box, PRED_COLOUR)):
        if box is not None:
            x0, x1 = sorted((box[0] * scale, box[2] * scale))
            y0, y1 = sorted((box[1] * scale, box[3] * scale))
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=1)

    tile = Image.new("RGB", (TILE, TILE + CAPTION_HEIGHT), (24, 24, 24))
    tile.paste(picture, ((TILE - size[0]) // 2, (TILE - size[1]) // 2))
    draw = ImageDraw.Draw(tile)
    font = _font(13)
    for line, text in enumerate(caption[:3]):
        draw.text((4, TILE + 2 + 17 * line), _fit_text(draw, text, font, TILE - 8), fill=(235, 235, 235), font=font)
    return tile


def worst_cases_grid_size(count: int) -> tuple[int, int]:
    """(width, height) of the grid image holding ``count`` tiles (1 placeholder tile when 0)."""
    count = max(count, 1)
    columns = min(GRID_COLUMNS, count)
    rows = math.ceil(count / GRID_COLUMNS)
    return GAP + columns * (TILE + GAP), HEADER_HEIGHT + GAP + rows * (TILE + CAPTION_HEIGHT + GAP)


def worst_cases_grid(tiles: list[Image.Image]) -> Image.Image:
    """Tiles (worst first) in rows of ``GRID_COLUMNS`` under a legend; a placeholder when empty."""
    if not tiles:
        placeholder = Image.new("RGB", (TILE, TILE + CAPTION_HEIGHT), (24, 24, 24))
        ImageDraw.Draw(placeholder).text((8, TILE // 2), "no present targets evaluated", fill=(235, 235, 235),
                                         font=_font(13))
        tiles = [placeholder]
    width, height = worst_cases_grid_size(len(tiles))
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((GAP, 6), "Lowest mask IoU first.  Green: ground truth.  Red: prediction.  Rectangles: boxes.",
              fill=(0, 0, 0), font=_font(14))
    for i, tile in enumerate(tiles):
        row, column = divmod(i, GRID_COLUMNS)
        grid.paste(tile, (GAP + column * (TILE + GAP), HEADER_HEIGHT + GAP + row * (TILE + CAPTION_HEIGHT + GAP)))
    return grid
