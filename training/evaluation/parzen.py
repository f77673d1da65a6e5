"""Gaussian Parzen-window log-likelihood, the paper's Table 1 protocol (released
`parzen_ll.py`): fit isotropic Gaussians of width sigma on generator samples, pick sigma on
validation images, report the mean log-likelihood of the test images with its standard error.

    log p(x) = logmeanexp_i( -||x - mu_i||^2 / (2 sigma^2) ) - (d/2) log(2 pi sigma^2)

Everything is float64; squared distances come from matrix products in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PAPER_SIGMAS = np.logspace(-1, 0, 10)


def squared_distances(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """||x_j - mu_i||^2 for all pairs, (len(x), len(mu)), clipped at 0 against rounding."""
    x, mu = np.asarray(x, np.float64), np.asarray(mu, np.float64)
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ mu.T + (mu * mu).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).mean(axis=axis, keepdims=True))).squeeze(axis)


def parzen_log_likelihoods(x: np.ndarray, mu: np.ndarray, sigmas: np.ndarray | float,
                           chunk: int = 1000,
                           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """log p(x_j) under the Parzen window on centres `mu`, for each sigma:
    shape (len(sigmas), len(x)) (or (len(x),) for a scalar sigma)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    mu = np.asarray(mu, np.float64).reshape(len(mu), -1)
    if x.shape[1] != mu.shape[1] or len(mu) == 0 or len(x) == 0:
        raise ValueError(f"need non-empty x and mu of one dimension, got {x.shape}, {mu.shape}")
    scalar = np.ndim(sigmas) == 0
    sig = np.atleast_1d(np.asarray(sigmas, np.float64))
    if (sig <= 0).any():
        raise ValueError("sigma must be > 0")
    dim = x.shape[1]
    out = np.empty((len(sig), len(x)))
    for start in range(0, len(x), chunk):
        d2 = squared_distances(x[start:start + chunk], mu)
        for s, sigma in enumerate(sig):
            out[s, start:start + chunk] = (_logmeanexp(-d2 / (2 * sigma**2), axis=1)
                                           - dim * math.log(sigma * math.sqrt(2 * math.pi)))
        if progress is not None:
            progress(min(chunk, len(x) - start))
    return out[0] if scalar else out


@dataclass(frozen=True)
class ParzenResult:
    ll: float  # mean log-likelihood of the test images (nats)
    se: float  # its standard error
    sigma: float
    validation_ll: dict[float, float]  # mean validation LL for each candidate sigma
    n_samples: int
    n_test: int


def parzen_protocol(samples: np.ndarray, validation: np.ndarray, test: np.ndarray,
                    sigmas: np.ndarray = PAPER_SIGMAS,
                    progress: Callable[[int], None] | None = None) -> ParzenResult:
    """Choose sigma by the mean LL of `validation`, report mean +- se over `test`."""
    val_ll = parzen_log_likelihoods(validation, samples, sigmas, progress=progress).mean(axis=1)
    best = float(sigmas[int(np.argmax(val_ll))])
    test_ll = parzen_log_likelihoods(test, samples, best, progress=progress)
    return ParzenResult(
        ll=float(test_ll.mean()),
        se=float(test_ll.std() / math.sqrt(len(test_ll))),  # as parzen_ll.py: ddof 0
        sigma=best,
        validation_ll={float(s): float(v) for s, v in zip(sigmas, val_ll, strict=True)},
        n_samples=len(samples),
        n_test=len(test_ll),
    )
