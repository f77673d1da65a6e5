"""The paper's Figures 2 and 3 for MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.data.mnist import IMAGE_SHAPE
from training.figures.grid import tile

H, W = IMAGE_SHAPE[1:]


def figure2(path: Path, samples: np.ndarray, neighbours: np.ndarray, rows: int = 6,
            cols: int = 5, scale: int = 3) -> Path:
    """Rows of samples; the rightmost column (yellow frame, as in the paper) holds the
    nearest training image of the sample beside it, to show G is not copying."""
    samples = samples.reshape(-1, H, W)[: rows * cols].reshape(rows, cols, H, W)
    neighbours = neighbours.reshape(-1, H, W)[cols - 1 :: cols][:rows]
    cells = np.concatenate([samples, neighbours[:, None]], axis=1).reshape(-1, H, W)
    grey = tile(cells, cols + 1, pad=2)
    rgb = np.stack([grey] * 3, axis=-1)
    cell_h, cell_w = H + 2, W + 2
    for r in range(rows):  # frame the neighbour column
        top, left = r * cell_h, cols * cell_w
        rgb[top : top + cell_h + 2, left : left + 2] = (255, 215, 0)
        rgb[top : top + cell_h + 2, left + cell_w : left + cell_w + 2] = (255, 215, 0)
        rgb[top : top + 2, left : left + cell_w + 2] = (255, 215, 0)
        rgb[top + cell_h : top + cell_h + 2, left : left + cell_w + 2] = (255, 215, 0)
    return _save(path, Image.fromarray(rgb, "RGB"), scale)


def figure3(path: Path, paths: np.ndarray, scale: int = 3) -> Path:
    """One row per latent path: (rows, steps, 784) images."""
    return image_rows(path, paths, scale)


def image_rows(path: Path, rows: np.ndarray, scale: int = 3) -> Path:
    """(rows, columns, 784) images as one grey picture, a row of the array a row of it."""
    columns = rows.shape[1]
    return _save(path, Image.fromarray(tile(rows.reshape(-1, H, W), columns), "L"), scale)


def _save(path: Path, picture: Image.Image, scale: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)
    return path
