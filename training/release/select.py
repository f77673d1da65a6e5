"""Which weights of a run to release, chosen on validation images only (the test set is
never looked at): the best snapshot (`export --select`), or the best window of snapshots
to average (`export --average`). Also the full-size validation Parzen of
`python -m training validate`, to compare runs without the test set.

The criterion depends on the model. The paper's unconditional G is chosen by validation
Parzen, as the paper measured it. A conditional G (§7.1) is chosen by its validation
class-conditional FD: the mean over digits k of the Fréchet distance, in the classifier's
feature space, between G(z, k) and the validation images of digit k (lower is better). A
Parzen window of the marginal cannot see whether G draws the digit it is asked for; this
can (docs/conditional.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.mnist import MNIST
from training.evaluation.classifier import DEFAULT_DIR as CLASSIFIER_DIR
from training.evaluation.classifier import classify, load_classifier
from training.evaluation.conditional import class_scores
from training.evaluation.generators import GeneratorSource, load_generator, torch_source
from training.evaluation.memorisation import memorisation_from_distances, nearest_neighbours
from training.evaluation.parzen import ParzenResult, parzen_protocol
from training.release.average import average_generator
from training.runs import SNAPSHOTS, generator_snapshots, load_config


def cheap_validation_parzen(source: GeneratorSource, mnist: MNIST, seed: int = 0) -> float:
    """For checkpoint selection: 2,000 samples, sigma chosen on validation 50,000-50,999,
    scored on validation 51,000-52,999. Never touches the test set."""
    samples = source.sample(2000, seed)
    result = parzen_protocol(samples, mnist.valid.images[:1000], mnist.valid.images[1000:3000])
    return result.ll


def validation_parzen(source: GeneratorSource, mnist: MNIST, n_samples: int = 10_000,
                      seed: int = 0) -> ParzenResult:
    """The paper's protocol at full size on validation images only, to compare runs without
    the test set: sigma chosen on 50,000-50,999, scored on 51,000-59,999."""
    return validation_parzen_of(source.sample(n_samples, seed), mnist)


def validation_parzen_of(samples: np.ndarray, mnist: MNIST) -> ParzenResult:
    """validation_parzen for samples already drawn."""
    return parzen_protocol(samples, mnist.valid.images[:1000], mnist.valid.images[1000:])


# Samples per class of the cheap class-conditional FD (2,500 in all, as cheap as the cheap
# Parzen); the full-size one takes n_samples / classes per class (1,000 of each digit).
CHEAP_PER_CLASS = 250


class ValidationClassFD:
    """The class-conditional FD of a conditional G against the validation images 50,000-
    59,999 (about 1,000 of each digit): their classifier features are computed once."""

    def __init__(self, mnist: MNIST, classifier_dir: Path = CLASSIFIER_DIR) -> None:
        self.classifier = load_classifier(classifier_dir)
        self.labels = mnist.valid.labels
        self.features = classify(self.classifier, mnist.valid.images)[1]

    def __call__(self, source: GeneratorSource, n_per_class: int, seed: int = 0) -> float:
        return class_scores(source, self.classifier, self.features, self.labels,
                            n_per_class, seed).fd_mean


@dataclass
class Criterion:
    """How snapshots are ranked on validation images: a cheap score for every snapshot and a
    full-size one for the finalists."""

    key: str  # "parzen" or "class_fd": names the scores in cards and reports
    name: str  # for people
    cheap: Callable[[GeneratorSource], float]
    full: Callable[[GeneratorSource, int], float]  # (source, n_samples)
    lower_is_better: bool

    def best(self, scores: dict) -> object:
        return (min if self.lower_is_better else max)(scores, key=scores.get)

    def ranked(self, scores: dict) -> list:
        return sorted(scores, key=scores.get, reverse=not self.lower_is_better)


def criterion(classes: int, mnist: MNIST) -> Criterion:
    """Validation Parzen for an unconditional G, validation class-conditional FD for a
    conditional one (see the module doc)."""
    if not classes:
        return Criterion("parzen", "validation Parzen",
                         lambda s: cheap_validation_parzen(s, mnist),
                         lambda s, n: validation_parzen(s, mnist, n).ll, lower_is_better=False)
    fd = ValidationClassFD(mnist)
    return Criterion("class_fd", "validation class-conditional FD (mean over digits of the "
                     "FD between G(z, k) and validation images of digit k, classifier "
                     "features; lower is better)",
                     lambda s: fd(s, CHEAP_PER_CLASS),
                     lambda s, n: fd(s, max(2, n // classes)), lower_is_better=True)


def snapshot_scores(run: Path, mnist: MNIST, progress: bool = True,
                    with_discriminator: bool = False,
                    score: Callable[[GeneratorSource], float] | None = None
                    ) -> dict[int, tuple[Path, float]]:
    """`score` (default: the cheap validation Parzen) of each generator snapshot of `run`
    (only those with a discriminator snapshot beside them, if asked), by epoch."""
    snapshots = generator_snapshots(run, with_discriminator)
    if not snapshots:
        raise FileNotFoundError(f"{run / SNAPSHOTS} holds no generator-epoch-*.pt")
    score = score or (lambda source: cheap_validation_parzen(source, mnist))
    return {epoch: (f, score(load_generator(f)))
            for epoch, f in tqdm(snapshots.items(), desc=f"scoring {run.name}",
                                 disable=not progress)}


@dataclass
class Selection:
    """Which snapshot a run exports, and the validation scores that chose it."""

    epoch: int
    best: Path  # that epoch's generator snapshot
    cheap: dict[int, float]  # every snapshot: the cheap validation score, by epoch
    full: dict[int, float]  # the finalists: the full-size validation score, by epoch
    criterion: str = "parzen"  # Criterion.key
    by: str = "validation Parzen"  # Criterion.name

    def to_card(self) -> dict:
        if self.criterion == "parzen":
            return {"by": f"full-size validation Parzen of the {len(self.full)} best "
                          "snapshots by cheap validation Parzen",
                    "scores": self.cheap, "finalists": self.full}
        return {"by": f"full-size {self.by}, of the {len(self.full)} best snapshots by the "
                      f"same score on {CHEAP_PER_CLASS} samples of each class",
                "criterion": self.criterion, "scores": self.cheap, "finalists": self.full}


def select_snapshot(run: Path, mnist: MNIST, progress: bool = True,
                    with_discriminator: bool = False, finalists: int = 3,
                    n_samples: int = 10_000) -> Selection:
    """The snapshot of `run` with the best full-size validation score among the `finalists`
    best by the cheap one (the run's criterion: Parzen, or class-conditional FD for a
    conditional G). The cheap Parzen ranks every snapshot in seconds but saturates once runs
    are good (139.8 vs 139.9 where full size gives 208.6 vs 204.0)."""
    if finalists < 1:
        raise ValueError(f"finalists must be >= 1, got {finalists}")
    rule = criterion(load_config(run).classes, mnist)
    scored = snapshot_scores(run, mnist, progress, with_discriminator, rule.cheap)
    cheap = {epoch: score for epoch, (_, score) in scored.items()}
    top = rule.ranked(cheap)[:finalists]
    full = {epoch: rule.full(load_generator(scored[epoch][0]), n_samples)
            for epoch in tqdm(top, desc="finalists, full size", disable=not progress)}
    best = rule.best(full)
    return Selection(best, scored[best][0], cheap, full, rule.key, rule.name)


# A window is eligible only if at most this fraction of its samples is nearer a training
# image than 99% of validation images are. The export's check allows 2% on 2,000 samples
# (standard error about 0.3 points near 2%): the margin keeps chance from failing it.
WINDOW_MEMORISATION_LIMIT = 0.015


@dataclass
class WindowSelection:
    """Which window of snapshots a run exports averaged, and the scores that chose it."""

    window: tuple[int, int]  # first and last epoch averaged
    count: int  # snapshots averaged
    scores: dict[str, dict[str, float]]  # "200:600" -> validation score and memorisation
    by: str = "validation Parzen"  # Criterion.name

    def to_card(self) -> dict:
        return {"by": f"full-size {self.by} of G averaged over each window's snapshots, "
                      "among windows whose memorisation on validation images is at most "
                      f"{WINDOW_MEMORISATION_LIMIT:.1%}",
                "window": list(self.window), "snapshots_averaged": self.count,
                "windows": self.scores}


def select_window(run: Path, mnist: MNIST, windows: list[tuple[int, int]],
                  n_samples: int = 10_000, progress: bool = True,
                  memorisation_limit: float = WINDOW_MEMORISATION_LIMIT) -> WindowSelection:
    """Of `windows`, the one whose averaged G has the best full-size validation score (the
    run's criterion) among those whose samples pass the memorisation limit against
    validation images."""
    if not windows:
        raise ValueError("no windows to choose from")
    config = load_config(run)
    rule = criterion(config.classes, mnist)
    score_key = f"validation_{rule.key}"
    _, d_valid = nearest_neighbours(mnist.valid.images, mnist.train.images)
    scores, counts = {}, {}
    for first, last in tqdm(windows, desc="averaged windows", disable=not progress):
        g_state, epochs = average_generator(run, first, last)
        key = f"{epochs[0]}:{epochs[-1]}"
        source = torch_source(g_state, config, f"{run} average {key}")
        samples = source.sample(n_samples, 0)  # a conditional G: labels from the prior
        memo = memorisation_from_distances(
            nearest_neighbours(samples, mnist.train.images)[1], d_valid)
        score = (validation_parzen_of(samples, mnist).ll if rule.key == "parzen"
                 else rule.full(source, n_samples))
        scores[key] = {score_key: score, "validation_memorisation": memo.closer_than_test_p1}
        counts[key] = len(epochs)
    eligible = {k: v[score_key] for k, v in scores.items()
                if v["validation_memorisation"] <= memorisation_limit}
    if not eligible:
        raise ValueError(f"every window has over {memorisation_limit:.1%} of its samples nearer "
                         f"a training image than 99% of validation images are: {scores}")
    best = rule.best(eligible)
    first, last = (int(e) for e in best.split(":"))
    return WindowSelection((first, last), counts[best], scores, rule.name)
