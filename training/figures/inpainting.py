"""What §7.3's inpainting model makes of a few test digits (docs/inpainting.md): each row an
original, its masked input (the hidden pixels tinted), k completions by the model (one
latent each) and the completion found by z-search in the unconditional G (the baseline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.data.mnist import IMAGE_SHAPE
from training.figures.grid import tile

H, W = IMAGE_SHAPE[1:]
HIDDEN_TINT = (70, 100, 190)  # the hidden pixels of the masked input: a blue no digit has
GAP = 6  # white pixels between the column groups, before scaling
HEADER = 20  # height of the band of column titles, after scaling


def _group(images: np.ndarray, cols: int, tint: np.ndarray | None = None) -> np.ndarray:
    """(rows, cols, 784) images tiled as RGB uint8; where `tint` (same shape) is 1, the
    pixel is HIDDEN_TINT."""
    grey = tile(images.reshape(-1, H, W), cols)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if tint is not None:
        rgb[tile(tint.reshape(-1, H, W), cols, pad_value=0.0) > 127] = HIDDEN_TINT
    return rgb


def inpainting_figure(path: Path, originals: np.ndarray, hidden: np.ndarray,
                      completions: np.ndarray, baseline: np.ndarray, scale: int = 3) -> Path:
    """originals, hidden: (rows, 784) images and masks (1 = hidden); completions:
    (rows, k, 784), the model's; baseline: (rows, 784), z-search's."""
    k = completions.shape[1]
    inputs = np.stack([originals, originals * (1 - hidden)], axis=1)
    tint = np.stack([np.zeros_like(hidden), hidden], axis=1)
    groups = [_group(inputs, 2, tint), _group(completions, k), _group(baseline[:, None], 1)]
    gap = np.full((groups[0].shape[0], GAP, 3), 255, np.uint8)
    picture = Image.fromarray(np.concatenate([groups[0], gap, groups[1], gap, groups[2]],
                                             axis=1), "RGB")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (picture.width, picture.height + HEADER), "white")
    canvas.paste(picture, (0, HEADER))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=12)
    left = 0
    for group, title in zip(groups, ("original, input", f"model: {k} completions",
                                     "z-search"), strict=True):
        draw.text((left + 2 * scale, 3), title, fill=(0, 0, 0), font=font)
        left += (group.shape[1] + GAP) * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
