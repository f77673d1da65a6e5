"""Tile images in [0, 1] into one grid picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def tile(images: np.ndarray, cols: int, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """(n, h, w) floats in [0, 1] -> one (rows*(h+pad)+pad, cols*(w+pad)+pad) uint8 array."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"tile needs a non-empty (n, h, w) array, got shape {images.shape}")
    n, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), pad_value, np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = image
    return np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)


def save_grid(path: Path, images: np.ndarray, cols: int, scale: int = 2) -> Path:
    picture = Image.fromarray(tile(images, cols), mode="L")
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
