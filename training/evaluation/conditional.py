"""Measures of a conditional generator p(x | c) (§7.1, docs/conditional.md) through the
evaluation's classifier: does G draw the digit it is asked for (label agreement), and how
far are its class-k samples from real images of digit k (class-conditional FD, the mean of
the per-class Fréchet distances in the classifier's 128-d feature space)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from training.evaluation.classes import label_agreement
from training.evaluation.classifier import classify
from training.evaluation.frechet import frechet_per_class
from training.evaluation.generators import GeneratorSource


def class_samples(source: GeneratorSource, n_per_class: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): `n_per_class` samples of each class, on the seed's latents; rows
    k * n_per_class ... (k + 1) * n_per_class - 1 are asked for class k."""
    if not source.conditional:
        raise ValueError(f"{source.description} is unconditional: it takes no labels")
    if n_per_class < 2:
        raise ValueError(f"need at least 2 samples per class, got {n_per_class}")
    labels = np.repeat(np.arange(source.classes), n_per_class)
    return source.sample(len(labels), seed, labels), labels


@dataclass(frozen=True)
class ClassScores:
    """A conditional G's samples of each class, seen by the classifier."""

    fd_per_class: list[float]  # FD(features of G(z, k), features of real digit-k images)
    fd_mean: float  # their mean: the class-conditional FD
    agreement: dict  # classes.LabelAgreement as a dict
    n_per_class: int


def class_scores(source: GeneratorSource, classifier, real_features: np.ndarray,
                 real_labels: np.ndarray, n_per_class: int, seed: int = 0) -> ClassScores:
    """Label agreement and per-class FD of `source` against real images whose classifier
    features and labels are given (validation images to select, test images to report)."""
    images, labels = class_samples(source, n_per_class, seed)
    logits, features = classify(classifier, images)
    fd = frechet_per_class(features, labels, real_features, real_labels, source.classes)
    agreement = label_agreement(labels, logits.argmax(axis=1), source.classes)
    return ClassScores(fd, float(np.mean(fd)), asdict(agreement), n_per_class)
