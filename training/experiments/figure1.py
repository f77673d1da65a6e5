"""The paper's Figure 1, reproduced by really training a GAN on the 1-D toy (`toy-1d`).

Each panel shows p_data (black, dotted), p_g (green, solid), D (blue, dashed) and, below,
the map x = G(z) from a uniform grid of z. The stages follow the caption:
(a) a pair partway through training; (b) D trained alone to convergence, so D -> D* =
p_data / (p_data + p_g) (also drawn, thin); (c) a few steps of G alone, which moves G(z)
up D's slope towards the data; (d) after much more training, p_g ~ p_data and D ~ 1/2.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.config import TrainConfig, preset, with_overrides  # noqa: E402
from training.data.toy import GaussianMixture, toy_distribution  # noqa: E402
from training.gan.losses import discriminator_loss, generator_loss  # noqa: E402
from training.gan.networks import (  # noqa: E402
    Discriminator,
    Generator,
    build_networks,
    sample_noise,
)
from training.gan.optim import make_optimizer  # noqa: E402
from training.gan.theory import optimal_discriminator  # noqa: E402
from training.gan.train import Batch, alternating_iteration  # noqa: E402

X_RANGE = (-1.0, 4.5)
BINS = 220


def generator_density(g: Generator, config: TrainConfig, n: int = 200_000) -> np.ndarray:
    """p_g on the plotting bins, from a histogram of n samples (lightly smoothed)."""
    with torch.no_grad():
        x = g(sample_noise(n, config)).numpy().ravel()
    hist, _ = np.histogram(x, bins=BINS, range=X_RANGE, density=True)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    return np.convolve(hist, kernel / kernel.sum(), mode="same")


def bin_centers() -> np.ndarray:
    edges = np.linspace(*X_RANGE, BINS + 1)
    return 0.5 * (edges[1:] + edges[:-1])


def discriminator_curve(d: Discriminator, grid: np.ndarray) -> np.ndarray:
    d.eval()
    with torch.no_grad():
        values = torch.sigmoid(d(torch.from_numpy(grid[:, None].astype(np.float32)))).numpy()
    d.train()
    return values.ravel()


def _train_d_alone(g: Generator, d: Discriminator, opt_d: torch.optim.Optimizer,
                   data: GaussianMixture, rng: np.random.Generator, config: TrainConfig,
                   steps: int) -> None:
    for _ in range(steps):
        x = torch.from_numpy(data.sample(config.batch_size, rng))
        with torch.no_grad():
            fake = g(sample_noise(config.batch_size, config))
        loss = discriminator_loss(d(x), d(fake))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()


def _train_g_alone(g: Generator, d: Discriminator, opt_g: torch.optim.Optimizer,
                   config: TrainConfig, steps: int) -> None:
    for _ in range(steps):
        loss = generator_loss(d(g(sample_noise(config.batch_size, config))), config.g_loss)
        opt_g.zero_grad(set_to_none=True)
        loss.backward(inputs=list(g.parameters()))
        opt_g.step()


def _alternate(g: Generator, d: Discriminator, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, data: GaussianMixture, rng: np.random.Generator,
               config: TrainConfig, steps: int) -> None:
    for _ in range(steps):
        real = [Batch(torch.from_numpy(data.sample(config.batch_size, rng)))
                for _ in range(config.k)]
        alternating_iteration(g, d, opt_g, opt_d, real, config)


def _panel(ax: plt.Axes, label: str, g: Generator, d: Discriminator, config: TrainConfig,
           data: GaussianMixture, show_optimal: bool) -> None:
    grid = bin_centers()
    p_data = data.density(grid[:, None])
    p_g = generator_density(g, config)
    scale = 1.0 / max(p_data.max(), p_g.max())  # densities drawn on D's [0, 1] axis
    ax.plot(grid, p_data * scale, "k:", lw=2, label="p_data")
    ax.plot(grid, p_g * scale, "g-", lw=1.5, label="p_g")
    ax.plot(grid, discriminator_curve(d, grid), "b--", lw=1.5, label="D(x)")
    if show_optimal:
        ax.plot(grid, optimal_discriminator(p_data, p_g), color="tab:blue", lw=0.6,
                label="D* = p_data/(p_data+p_g)")
    # the mapping x = G(z): z on the lower line, x on the upper one
    z = torch.linspace(-np.sqrt(3), np.sqrt(3), 15)[:, None]
    with torch.no_grad():
        x = g(z).numpy().ravel()
    z_on_axis = np.interp(z.numpy().ravel(), [-np.sqrt(3), np.sqrt(3)], [0.0, 3.0])
    for zi, xi in zip(z_on_axis, x, strict=True):
        ax.annotate("", xy=(xi, -0.15), xytext=(zi, -0.45),
                    arrowprops=dict(arrowstyle="->", lw=0.6, color="0.4"))
    ax.axhline(-0.15, color="k", lw=0.8)
    ax.axhline(-0.45, color="k", lw=0.8)
    ax.text(X_RANGE[0] + 0.1, -0.13, "x", fontsize=9, va="bottom")
    ax.text(X_RANGE[0] + 0.1, -0.43, "z", fontsize=9, va="bottom")
    ax.set_xlim(*X_RANGE)
    ax.set_ylim(-0.55, 1.1)
    ax.set_yticks([0, 0.5, 1])
    ax.set_title(label, fontsize=10)


def make_figure1(out: Path, seed: int = 0, early_steps: int = 40, d_steps: int = 1000,
                 g_steps: int = 10, late_steps: int = 8000) -> Path:
    """Train on the 1-D toy through the four stages and draw them side by side."""
    config = with_overrides(preset("toy-1d"), {"seed": seed, "batch_size": 128})
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = toy_distribution(config.dataset, config.toy_std)
    g, d = build_networks(config)
    opt_g, opt_d = make_optimizer(config, g.parameters()), make_optimizer(config, d.parameters())

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), dpi=100, sharey=True)
    _alternate(g, d, opt_g, opt_d, data, rng, config, early_steps)
    _panel(axes[0], f"(a) after {early_steps} iterations", g, d, config, data, False)
    _train_d_alone(g, d, opt_d, data, rng, config, d_steps)
    _panel(axes[1], f"(b) then {d_steps} steps of D alone", g, d, config, data, True)
    _train_g_alone(g, d, opt_g, config, g_steps)
    _panel(axes[2], f"(c) then {g_steps} steps of G alone", g, d, config, data, False)
    _alternate(g, d, opt_g, opt_d, data, rng, config, late_steps)
    _panel(axes[3], f"(d) then {late_steps} more iterations", g, d, config, data, False)
    axes[1].legend(loc="upper left", fontsize=7)
    fig.suptitle("Figure 1 of Goodfellow et al. (2014), reproduced on N(2, 0.5²) data "
                 "(Counterfeit, `make figure1`)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
