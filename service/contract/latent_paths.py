"""Paths in latent space between two codes (the paper's Figure 3). numpy only: the service
serves them (/interpolate) and the evaluation draws them with the same code."""

from __future__ import annotations

import numpy as np


def lerp(z0: np.ndarray, z1: np.ndarray, steps: int) -> np.ndarray:
    """`steps` points on the segment from z0 to z1, both ends included: (steps, dim)."""
    if steps < 2:
        raise ValueError("steps must be >= 2")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return ((1 - t) * z0[None, :] + t * z1[None, :]).astype(np.float32)


def slerp(z0: np.ndarray, z1: np.ndarray, steps: int) -> np.ndarray:
    """Spherical interpolation: the angle between the codes is swept at constant speed and
    the norm interpolated linearly; the segment when the codes are (anti)parallel."""
    if steps < 2:
        raise ValueError("steps must be >= 2")
    a, b = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return lerp(z0, z1, steps)
    cos = np.clip(a @ b / (na * nb), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6 or np.pi - omega < 1e-6:
        return lerp(z0, z1, steps)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    direction = (np.sin((1 - t) * omega) * (a / na) + np.sin(t * omega) * (b / nb)) / np.sin(omega)
    return (direction * ((1 - t) * na + t * nb)).astype(np.float32)
