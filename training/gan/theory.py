"""The paper's Section 4 as pure functions on densities sampled on a uniform grid.

Proposition 1: D*_G(x) = p_data(x) / (p_data(x) + p_g(x)).
Theorem 1: C(G) = max_D V(G, D) = -log 4 + 2 JSD(p_data || p_g), minimal iff p_g = p_data.
Integrals are Riemann sums with spacing dx; 0 log 0 is taken as 0.
"""

from __future__ import annotations

import numpy as np


def _densities(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"densities must share a grid, got shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("densities must be non-negative")
    return p, q


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    mask = x > 0
    out[mask] = x[mask] * np.log(y[mask])
    return out


def optimal_discriminator(p_data: np.ndarray, p_g: np.ndarray) -> np.ndarray:
    """D*(x) = p_data / (p_data + p_g); 1/2 where both densities vanish (any value is optimal)."""
    p, q = _densities(p_data, p_g)
    total = p + q
    return np.divide(p, total, out=np.full_like(p, 0.5), where=total > 0)


def virtual_training_criterion(p_data: np.ndarray, p_g: np.ndarray, dx: float) -> float:
    """C(G) = E_pdata[log D*(x)] + E_pg[log(1 - D*(x))], by direct integration."""
    p, q = _densities(p_data, p_g)
    d = optimal_discriminator(p, q)
    return float((_xlogy(p, d) + _xlogy(q, 1.0 - d)).sum() * dx)


def kl_divergence(p: np.ndarray, q: np.ndarray, dx: float) -> float:
    p, q = _densities(p, q)
    if ((p > 0) & (q == 0)).any():
        return float("inf")
    ratio = np.divide(p, q, out=np.ones_like(p), where=q > 0)
    return float(_xlogy(p, ratio).sum() * dx)


def jensen_shannon(p: np.ndarray, q: np.ndarray, dx: float) -> float:
    p, q = _densities(p, q)
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m, dx) + 0.5 * kl_divergence(q, m, dx)
