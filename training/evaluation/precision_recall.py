"""Precision and recall of a sample distribution (Kynkäänniemi et al., 2019, "Improved
Precision and Recall Metric for Assessing Generative Models"), in a feature space:

- each set's manifold is the union of balls around its points, the ball of a point
  reaching its k-th nearest neighbour in the same set (k = 3, as in the paper);
- precision: the fraction of generated points inside the real images' manifold (are the
  samples realistic?);
- recall: the fraction of real points inside the samples' manifold (is all of the data
  covered?).

Distances are Euclidean, in float64, from matrix products in chunks; a point on a ball's
boundary is inside it, as in the paper's code (distance <= radius).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.evaluation.parzen import squared_distances

K = 3  # the paper's neighbourhood size


def knn_radii(points: np.ndarray, k: int = K, chunk: int = 1000) -> np.ndarray:
    """(n,) distance from each point to its k-th nearest *other* point of the same set."""
    x = np.asarray(points, np.float64).reshape(len(points), -1)
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} points, got {k}")
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d2 = squared_distances(x[start:start + chunk], x)
        rows = np.arange(len(d2))
        d2[rows, start + rows] = -1.0  # a point is not its own neighbour: sorts first
        radii[start:start + chunk] = np.sqrt(np.maximum(np.partition(d2, k, axis=1)[:, k], 0))
    return radii


def in_manifold(queries: np.ndarray, points: np.ndarray, radii: np.ndarray,
                chunk: int = 1000) -> np.ndarray:
    """(len(queries),) bool: whether each query lies in some ball (points[j], radii[j])."""
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    p = np.asarray(points, np.float64).reshape(len(points), -1)
    r2 = np.asarray(radii, np.float64) ** 2
    if len(r2) != len(p):
        raise ValueError(f"{len(p)} points but {len(r2)} radii")
    inside = np.empty(len(q), bool)
    for start in range(0, len(q), chunk):
        inside[start:start + chunk] = (squared_distances(q[start:start + chunk], p)
                                       <= r2[None, :]).any(axis=1)
    return inside


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float  # fraction of generated points inside the real manifold
    recall: float  # fraction of real points inside the generated manifold
    k: int
    n_real: int
    n_generated: int


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = K,
                     real_radii: np.ndarray | None = None) -> PrecisionRecall:
    """Improved precision and recall of `generated` against `real` (feature vectors);
    `real_radii`, if given, are knn_radii(real, k), computed once for several calls."""
    if real_radii is None:
        real_radii = knn_radii(real, k)
    precision = in_manifold(generated, real, real_radii).mean()
    recall = in_manifold(real, generated, knn_radii(generated, k)).mean()
    return PrecisionRecall(float(precision), float(recall), k, len(real), len(generated))
