"""G and D of the paper (goodfeli/adversarial mnist.yaml), sized by a TrainConfig, and the
prior p(z) they are trained on."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from service.contract.card import Latent
from training.config import TrainConfig

SQRT3 = math.sqrt(3.0)


def _uniform_init(module: nn.Module, init_range: float) -> None:
    """pylearn2's `irange`: weights U(-r, r), biases 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.uniform_(layer.weight, -init_range, init_range)
            nn.init.zeros_(layer.bias)


class Maxout(nn.Module):
    """Maxout (Goodfellow et al., 2013): a linear map to units x pieces, then the max per
    unit."""

    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        if units < 1 or pieces < 1:
            raise ValueError("maxout needs units >= 1 and pieces >= 1")
        self.units, self.pieces = units, pieces
        # pylearn2 lays the pieces of one unit out next to each other: unit u owns
        # outputs u*pieces .. u*pieces + pieces - 1.
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z.view(*z.shape[:-1], self.units, self.pieces).amax(dim=-1)


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """The label c as G and D read it: (n, classes) float32, the card's one-hot."""
    return nn.functional.one_hot(labels.long(), classes).float()


class Generator(nn.Module):
    """MLP: ReLU hidden layers, then a sigmoid output for images or a linear one for toys.

    With a condition of `cond_dim` > 0 numbers, G(z, c) reads the concatenation [z, c]: the
    one-hot label of §7.1 (as Mirza & Osindero, 2014, do with their MLPs), or for §7.3's
    inpainting the visible pixels and the mask.
    """

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], data_dim: int,
                 sigmoid_output: bool, init_range: float, cond_dim: int = 0) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        layers: list[nn.Module] = []
        width = latent_dim + cond_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, data_dim)
        self.sigmoid_output = sigmoid_output
        _uniform_init(self, init_range)

    def init_output_bias_from_marginals(self, data: np.ndarray, eps: float = 1e-7) -> None:
        """Start the sigmoid at the mean of each pixel (pylearn2's
        init_sigmoid_bias_from_marginals): bias = logit(clip(mean, eps, 1 - eps))."""
        mean = np.clip(np.asarray(data, dtype=np.float64).mean(axis=0), eps, 1 - eps)
        with torch.no_grad():
            self.out.bias.copy_(torch.from_numpy(np.log(mean / (1 - mean))))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond_dim:
            z = torch.cat([z, c], dim=1)
        x = self.out(self.hidden(z))
        return torch.sigmoid(x) if self.sigmoid_output else x


class Discriminator(nn.Module):
    """Dropout, maxout, ..., dropout, one linear unit. Returns the logit of D(x).

    The paper's include-probabilities 0.8 (input) and 0.5 (hidden) with scales 1.25 and 2
    are exactly inverted dropout, which is what nn.Dropout does.

    With a condition of `cond_dim` > 0 numbers, D(x, c) gives it to its first maxout layer
    beside the (dropped-out) pixels: the one-hot label of §7.1, or the inpainting mask of
    §7.3. The condition is never dropped, so D always knows which class the image claims
    to be, or which pixels were completed.
    """

    def __init__(self, data_dim: int, units: tuple[int, ...], pieces: int, input_keep: float,
                 hidden_keep: float, init_range: float, cond_dim: int = 0) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        layers: list[nn.Module] = []
        width, keep = data_dim, input_keep
        for i, size in enumerate(units):
            layers += [nn.Dropout(1.0 - keep), Maxout(width + (cond_dim if i == 0 else 0),
                                                      size, pieces)]
            width, keep = size, hidden_keep
        layers += [nn.Dropout(1.0 - keep), nn.Linear(width, 1)]
        self.net = nn.Sequential(*layers)
        _uniform_init(self, init_range)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond_dim:  # net[0] is the input dropout, net[1] the first maxout layer
            return self.net[1:](torch.cat([self.net[0](x.flatten(1)), c], dim=1))
        return self.net(x.flatten(1))


def build_networks(config: TrainConfig) -> tuple[Generator, Discriminator]:
    g = Generator(config.latent_dim, config.g_hidden, config.data_dim,
                  sigmoid_output=config.image_data, init_range=config.g_init_range,
                  cond_dim=config.g_cond_dim)
    d = Discriminator(config.data_dim, config.d_units, config.d_pieces, config.d_input_keep,
                      config.d_hidden_keep, config.d_init_range, cond_dim=config.d_cond_dim)
    return g, d


def latent_prior(config: TrainConfig) -> Latent:
    """p(z) as the model card states it: U(-sqrt 3, sqrt 3) or N(0, 1) per coordinate."""
    if config.noise == "uniform":
        return Latent(config.latent_dim, "uniform", -SQRT3, SQRT3)
    return Latent(config.latent_dim, "normal")


def sample_noise(n: int, config: TrainConfig, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """z with unit variance per coordinate: U(-sqrt 3, sqrt 3) (the paper's) or N(0, 1)."""
    shape = (n, config.latent_dim)
    if config.noise == "uniform":
        u = torch.rand(shape, device=device, generator=generator)
        return (2 * u - 1) * SQRT3
    return torch.randn(shape, device=device, generator=generator)
