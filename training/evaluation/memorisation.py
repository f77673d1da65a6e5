"""Nearest training images: the memorisation check and the paper's Figure 2.

A generator that copies its training set puts samples much closer to their nearest
training image than held-out test images are to theirs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.evaluation.parzen import squared_distances


def nearest_neighbours(x: np.ndarray, reference: np.ndarray, chunk: int = 500
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(index, euclidean distance) of each row's nearest row of `reference`."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    index = np.empty(len(x), np.int64)
    dist = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d2 = squared_distances(x[start:start + chunk], ref)
        index[start:start + chunk] = d2.argmin(axis=1)
        dist[start:start + chunk] = np.sqrt(d2.min(axis=1))
    return index, dist


@dataclass(frozen=True)
class Memorisation:
    sample_quantiles: dict[str, float]  # of each sample's distance to its nearest train image
    test_quantiles: dict[str, float]  # the same for held-out test images
    closer_than_test_p1: float  # fraction of samples nearer than 99% of test images are
    clean: bool  # no excess of near-copies: the fraction above is at most 2%


QUANTILES = (0.0, 0.01, 0.05, 0.5)


def memorisation_check(samples: np.ndarray, test: np.ndarray, train: np.ndarray
                       ) -> Memorisation:
    return memorisation_from_distances(nearest_neighbours(samples, train)[1],
                                       nearest_neighbours(test, train)[1])


def memorisation_from_distances(d_samples: np.ndarray, d_test: np.ndarray) -> Memorisation:
    """memorisation_check from each sample's and each test image's nearest-train distance
    (to compare many generators against one set of test distances)."""
    def quantiles(d: np.ndarray) -> dict[str, float]:
        return {f"q{int(q * 100):02d}": float(np.quantile(d, q)) for q in QUANTILES}

    p1 = float(np.quantile(d_test, 0.01))
    closer = float((d_samples < p1).mean())
    return Memorisation(quantiles(d_samples), quantiles(d_test), closer, closer <= 0.02)
