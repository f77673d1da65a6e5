"""Frechet distance between Gaussians fitted to two sets of feature vectors (as in FID):

    FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

Tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
symmetric matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum: numpy only.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (n >= 2, d) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    root1 = _psd_sqrt(s1)
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def frechet_between(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def frechet_per_class(a: np.ndarray, a_labels: np.ndarray, b: np.ndarray,
                      b_labels: np.ndarray, classes: int) -> list[float]:
    """For each class k, the FD between the rows of `a` labelled k and those of `b`
    labelled k (a conditional generator's class-k samples against real class-k images)."""
    a_labels, b_labels = np.asarray(a_labels), np.asarray(b_labels)
    if len(a_labels) != len(a) or len(b_labels) != len(b):
        raise ValueError("one label per row is needed")
    return [frechet_between(a[a_labels == k], b[b_labels == k]) for k in range(classes)]
