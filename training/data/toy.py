"""Toy data: a 1-D Gaussian (the paper's Figure 1), and the 2-D ring of 8 and grid of 25
Gaussians used to measure mode coverage (VEEGAN, Srivastava et al. 2017: std 0.02)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianMixture:
    """Equal-weight mixture of isotropic Gaussians with a shared std."""

    centers: np.ndarray  # (modes, dim)
    std: float

    @property
    def dim(self) -> int:
        return self.centers.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        which = rng.integers(0, len(self.centers), size=n)
        noise = rng.normal(0.0, self.std, size=(n, self.dim))
        return (self.centers[which] + noise).astype(np.float32)

    def density(self, x: np.ndarray) -> np.ndarray:
        """p(x) at points x of shape (n, dim)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        sq = ((x[:, None, :] - self.centers[None, :, :]) ** 2).sum(-1)
        norm = (2 * math.pi * self.std**2) ** (self.dim / 2)
        return np.exp(-sq / (2 * self.std**2)).mean(axis=1) / norm


def gaussian_1d(mean: float = 0.0, std: float = 0.5) -> GaussianMixture:
    return GaussianMixture(np.array([[mean]], dtype=np.float64), std)


def ring_8(radius: float = 2.0, std: float = 0.02) -> GaussianMixture:
    angles = 2 * math.pi * np.arange(8) / 8
    return GaussianMixture(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), std)


def grid_25(spacing: float = 2.0, std: float = 0.02) -> GaussianMixture:
    ticks = spacing * (np.arange(5) - 2)
    return GaussianMixture(np.array([(a, b) for a in ticks for b in ticks], dtype=np.float64), std)


def toy_distribution(name: str, std: float) -> GaussianMixture:
    if name == "gaussian-1d":
        # Off zero, where an untrained G puts its mass, so there is something to learn.
        return gaussian_1d(mean=2.0, std=std)
    if name == "ring-8":
        return ring_8(std=std)
    if name == "grid-25":
        return grid_25(std=std)
    raise ValueError(f"unknown toy dataset {name!r}")


@dataclass(frozen=True)
class ModeCoverage:
    modes_covered: int
    modes_total: int
    high_quality: float  # fraction of samples within the radius of some mode
    per_mode: np.ndarray  # fraction of all samples near each mode


def mode_coverage(samples: np.ndarray, mixture: GaussianMixture, radius_stds: float = 3.0,
                  min_fraction: float = 0.01) -> ModeCoverage:
    """A mode is covered when at least `min_fraction` of the samples lie within
    `radius_stds` standard deviations of its center (the VEEGAN protocol)."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, mixture.dim)
    if len(samples) == 0:
        raise ValueError("mode_coverage needs at least one sample")
    dist = np.sqrt(((samples[:, None, :] - mixture.centers[None, :, :]) ** 2).sum(-1))
    nearest = dist.argmin(axis=1)
    close = dist[np.arange(len(samples)), nearest] <= radius_stds * mixture.std
    per_mode = np.bincount(nearest[close], minlength=len(mixture.centers)) / len(samples)
    return ModeCoverage(
        modes_covered=int((per_mode >= min_fraction).sum()),
        modes_total=len(mixture.centers),
        high_quality=float(close.mean()),
        per_mode=per_mode,
    )
