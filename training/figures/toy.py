"""Pictures of toy-data samples: a scatter against the mixture's modes (2-D), or a
histogram against the true density (1-D)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.data.toy import GaussianMixture, mode_coverage  # noqa: E402


def plot_toy_samples(path: Path, samples: np.ndarray, mixture: GaussianMixture,
                     title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if mixture.dim == 1:
        lo = float(mixture.centers.min() - 5 * mixture.std)
        hi = float(mixture.centers.max() + 5 * mixture.std)
        grid = np.linspace(lo, hi, 400)
        ax.hist(samples.ravel(), bins=80, range=(lo, hi), density=True, color="tab:green",
                alpha=0.5, label="p_g (samples)")
        ax.plot(grid, mixture.density(grid[:, None]), "k:", label="p_data")
        ax.legend()
    else:
        coverage = mode_coverage(samples, mixture)
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.3, color="tab:green")
        ax.scatter(mixture.centers[:, 0], mixture.centers[:, 1], s=30, marker="x", color="k")
        title += f"  ({coverage.modes_covered}/{coverage.modes_total} modes, " \
                 f"{coverage.high_quality:.0%} within 3σ)"
        span = np.abs(mixture.centers).max() + 1.0
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
