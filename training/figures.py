"""The paper's Figures 2 and 3 for MNIST, and training curves from a run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from training.image_grid import tile  # noqa: E402


def figure2(path: Path, samples: np.ndarray, neighbours: np.ndarray, rows: int = 6,
            cols: int = 5, scale: int = 3) -> Path:
    """Rows of samples; the rightmost column (yellow frame, as in the paper) holds the
    nearest training image of the sample beside it, to show G is not copying."""
    samples = samples.reshape(-1, 28, 28)[: rows * cols].reshape(rows, cols, 28, 28)
    neighbours = neighbours.reshape(-1, 28, 28)[cols - 1 :: cols][:rows]
    cells = np.concatenate([samples, neighbours[:, None]], axis=1).reshape(-1, 28, 28)
    grey = tile(cells, cols + 1, pad=2)
    rgb = np.stack([grey] * 3, axis=-1)
    cell = 28 + 2
    for r in range(rows):  # frame the neighbour column
        top, left = r * cell, cols * cell
        rgb[top : top + cell + 2, left : left + 2] = (255, 215, 0)
        rgb[top : top + cell + 2, left + cell : left + cell + 2] = (255, 215, 0)
        rgb[top : top + 2, left : left + cell + 2] = (255, 215, 0)
        rgb[top + cell : top + cell + 2, left : left + cell + 2] = (255, 215, 0)
    return _save(path, Image.fromarray(rgb, "RGB"), scale)


def figure3(path: Path, paths: np.ndarray, scale: int = 3) -> Path:
    """One row per latent path: (rows, steps, 784) images."""
    rows, steps = paths.shape[:2]
    return _save(path, Image.fromarray(tile(paths.reshape(-1, 28, 28), steps), "L"), scale)


def _save(path: Path, picture: Image.Image, scale: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)
    return path


def training_curves(path: Path, metrics_file: Path,
                    validation_parzen: dict[int, float] | None = None) -> Path:
    """Losses, mean D(x) and D(G(z)) against iterations; validation Parzen per epoch if given."""
    lines = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    steps = [m for m in lines if "event" not in m]
    if not steps:
        raise ValueError(f"{metrics_file} has no training metrics yet")
    x = np.array([m["step"] for m in steps])
    panels = 3 if validation_parzen else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), dpi=100)
    axes[0].plot(x, [m["d_loss"] for m in steps], label="D loss")
    axes[0].plot(x, [m["g_loss"] for m in steps], label="G loss")
    axes[0].set_xlabel("iteration")
    axes[0].legend()
    axes[1].plot(x, [m["d_real"] for m in steps], label="mean D(x)")
    axes[1].plot(x, [m["d_fake"] for m in steps], label="mean D(G(z))")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("iteration")
    axes[1].legend()
    if validation_parzen:
        epochs = sorted(validation_parzen)
        axes[2].plot(epochs, [validation_parzen[e] for e in epochs], "o-")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("validation Parzen LL (cheap setting)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def validation_curves(path: Path, curves: dict[str, dict[int, float]],
                      drops: dict[str, list[float]]) -> Path:
    """Cheap validation Parzen per snapshot epoch, one line per run, with each run's lr
    drops (in epochs) as dotted lines of its colour."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    for label, scores in curves.items():
        epochs = sorted(scores)
        (line,) = ax.plot(epochs, [scores[e] for e in epochs], "o-", ms=3, label=label)
        for epoch in drops.get(label, []):
            ax.axvline(epoch, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("epoch (dotted: an lr drop)")
    ax.set_ylabel("validation Parzen LL, cheap setting (nats)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
