"""The baseline that learned inference and inpainting are measured against: search G's
latent space for the z whose image best matches the pixels that are known. G is a shipped
model's, loaded in torch with exactly the weights its generator.onnx holds
(`load_frozen_generator`): the encoder is trained for it too.

    z* = argmin_z  sum_i v_i (G(z)_i - x_i)^2      (v_i = 1 where pixel i is known)

in two stages, under one budget (SearchBudget): the nearest, on the known pixels, of
`candidates` samples of the prior; then `steps` of Adam on z from there (or from any start,
e.g. an encoder's E(x)), z kept inside the prior's support. For §7.2 every pixel is known;
for §7.3 the visible ones are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.contract.card import CARD_FILE, Latent, read_card, sha256_file
from training.config import TrainConfig
from training.gan.networks import Generator, build_networks
from training.onnx_io import initializers


@dataclass(frozen=True)
class SearchBudget:
    """How much work one image's search may take; written into reports beside the result."""

    candidates: int = 10_000  # prior samples scanned for the starting z
    steps: int = 100  # Adam steps on z
    lr: float = 0.05
    seed: int = 0  # of the candidates (the seed contract's z)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrozenGenerator:
    """A model folder's G in torch, with exactly the weights its generator.onnx holds."""

    g: Generator
    latent: Latent
    config: TrainConfig  # G's training config, from the card
    path: Path  # the generator.onnx its weights come from
    name: str  # the model and its version, for reports
    sha256: str  # of that file: an encoder belongs to this G and no other


def load_frozen_generator(folder: Path) -> FrozenGenerator:
    """The G of the unconditional model in `folder`, frozen (no gradients to its weights)."""
    card = read_card(folder)
    try:
        config = TrainConfig.from_dict(card.raw["training"]["config"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{folder / CARD_FILE}: no training.config to build G from "
                         f"({err})") from None
    if config.classes or config.inpainting:
        raise ValueError(f"{folder / CARD_FILE}: searching z (and E(x) ~ z) is for an "
                         "unconditional G; this G also reads a label or a mask")
    path = folder / card.generator.file
    g, _ = build_networks(config)
    g.load_state_dict(initializers(path, "g."))  # the exported wrapper's parameters
    g.eval().requires_grad_(False)
    return FrozenGenerator(g, card.latent, config, path, f"{card.name} ({card.version})",
                           sha256_file(path))


def masked_error(images: torch.Tensor, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per image: the mean squared error over the known pixels, (n,). `images`, `x` and
    `known` are (n, pixels); `known` is 1 where a pixel counts."""
    return ((images - x) ** 2 * known).sum(dim=1) / known.sum(dim=1).clamp_min(1.0)


@torch.no_grad()
def nearest_candidate(g: nn.Module, latent: Latent, x: torch.Tensor, known: torch.Tensor,
                      budget: SearchBudget, chunk: int = 1000) -> torch.Tensor:
    """For each row of x, the z of the candidate G(z) nearest on the known pixels, (n, dim).
    The candidates are the first `budget.candidates` latents of the seed contract."""
    best_err = torch.full((len(x),), float("inf"))
    best_z = torch.zeros(len(x), latent.dim)
    for z_np in latent.chunks(budget.candidates, budget.seed, chunk):
        z = torch.from_numpy(z_np)
        images = g(z)  # (c, pixels)
        # ||v(a - b)||^2 = v.a^2 - 2 v.(a b) + v.b^2, for every (image, candidate) pair
        err = (known @ (images ** 2).T - 2 * (known * x) @ images.T
               + (known * x ** 2).sum(dim=1, keepdim=True)) / known.sum(dim=1, keepdim=True)
        err_min, idx = err.min(dim=1)
        better = err_min < best_err
        best_err[better], best_z[better] = err_min[better], z[idx[better]]
    return best_z


def refine(g: nn.Module, latent: Latent, x: torch.Tensor, known: torch.Tensor,
           z0: torch.Tensor, budget: SearchBudget) -> torch.Tensor:
    """`budget.steps` of Adam on z from z0, minimising each image's error on the known
    pixels (the sum over images keeps every image's gradient its own). A uniform prior's z
    is clamped to [low, high] after each step, so the result is a latent G was trained on."""
    z = z0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=budget.lr)
    for _ in range(budget.steps):
        optimiser.zero_grad(set_to_none=True)
        # gradients to z only: G's weights (and whether they require grad) are left alone
        masked_error(g(z), x, known).sum().backward(inputs=[z])
        optimiser.step()
        if latent.distribution == "uniform":
            with torch.no_grad():
                z.clamp_(latent.low, latent.high)
    return z.detach()


def search(g: nn.Module, latent: Latent, x: np.ndarray, known: np.ndarray,
           budget: SearchBudget = SearchBudget()) -> np.ndarray:
    """The baseline: the nearest candidate, then refined. `x` and `known` are (n, pixels)
    (known: 1 where a pixel is known); returns z, (n, dim) float32."""
    xt = torch.from_numpy(np.asarray(x, np.float32))
    kt = torch.from_numpy(np.asarray(known, np.float32))
    g = g.eval()
    z0 = nearest_candidate(g, latent, xt, kt, budget)
    return refine(g, latent, xt, kt, z0, budget).numpy()
