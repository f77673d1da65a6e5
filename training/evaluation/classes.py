"""Mode coverage on MNIST through a classifier: which digits a generator produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))): 1 for one class or pure guessing, 10 at most."""
    p = np.asarray(probs, np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> float:
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return float((p * (np.log(p + eps) - np.log(q + eps))).sum())


@dataclass(frozen=True)
class ClassCoverage:
    histogram: list[float]  # fraction of samples predicted as each digit
    kl_to_reference: float  # KL(histogram || reference label distribution)
    classes_at_5_percent: int
    inception_score: float


def class_coverage(logits: np.ndarray, reference_labels: np.ndarray,
                   n_classes: int = 10) -> ClassCoverage:
    probs = softmax(logits)
    hist = np.bincount(probs.argmax(axis=1), minlength=n_classes) / len(probs)
    ref = np.bincount(np.asarray(reference_labels), minlength=n_classes) / len(reference_labels)
    return ClassCoverage(
        histogram=[float(h) for h in hist],
        kl_to_reference=kl(hist, ref),
        classes_at_5_percent=int((hist >= 0.05).sum()),
        inception_score=inception_score(probs),
    )
