"""Classes on MNIST through a classifier: which digits a generator produces (mode
coverage), and whether a conditional generator draws the digit it was asked for."""

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


@dataclass(frozen=True)
class LabelAgreement:
    """How often the classifier calls a sample generated for class k a k (§7.1 models)."""

    overall: float  # fraction of all samples classified as their requested class
    per_class: list[float | None]  # the same among the samples requested for each class
    confusion: list[list[int]]  # [requested][predicted] counts
    n_samples: int


def label_agreement(requested: np.ndarray, predicted: np.ndarray,
                    n_classes: int = 10) -> LabelAgreement:
    """Agreement of predicted with requested labels: overall, per requested class (None for
    a class nothing was requested of) and the confusion counts."""
    requested, predicted = np.asarray(requested), np.asarray(predicted)
    if requested.shape != predicted.shape or requested.ndim != 1 or not len(requested):
        raise ValueError(f"need two equal non-empty label vectors, got {requested.shape} "
                         f"and {predicted.shape}")
    for name, y in (("requested", requested), ("predicted", predicted)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
            raise ValueError(f"{name} labels must be integers in 0..{n_classes - 1}")
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (requested, predicted), 1)
    asked = confusion.sum(axis=1)
    per_class = [float(confusion[k, k] / asked[k]) if asked[k] else None
                 for k in range(n_classes)]
    return LabelAgreement(float(np.trace(confusion) / len(requested)), per_class,
                          confusion.tolist(), len(requested))
