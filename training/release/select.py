"""Which weights of a run to release, chosen on validation images only (the test set is
never looked at): the best snapshot (`export --select`), or the best window of snapshots
to average (`export --average`). Also the full-size validation Parzen of
`python -m training validate`, to compare runs without the test set.

The criterion depends on the model. The paper's unconditional G is chosen by validation
Parzen, as the paper measured it. A conditional G (§7.1) is chosen by its validation
class-conditional FD: the mean over digits k of the Fréchet distance, in the classifier's
feature space, between G(z, k) and the validation images of digit k (lower is better). A
Parzen window of the marginal cannot see whether G draws the digit it is asked for; this
can (docs/conditional.md). An inpainting G (§7.3) draws no image of its own: it is chosen by
its validation completion agreement, the mean over the mask families, half of the pixels
hidden, of the share of its completions of validation images that the classifier calls the
image's digit (higher is better; docs/inpainting.md says why not the hidden-pixel error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.config import TrainConfig
from training.data.mnist import MNIST
from training.evaluation.classes import label_agreement
from training.evaluation.classifier import DEFAULT_DIR as CLASSIFIER_DIR
from training.evaluation.classifier import classify, load_classifier, predict
from training.evaluation.conditional import class_samples, class_scores
from training.evaluation.generators import GeneratorSource, load_generator, torch_source
from training.evaluation.inpainting import completion_agreement, load_completer, torch_completer
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
# Validation images of the cheap completion agreement, per mask family (one completion
# each); the full-size one takes n_samples of them (all 10,000).
CHEAP_IMAGES = 1000


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
    full-size one for the finalists, of a generator loaded by `load` (a snapshot's path) or
    `of_state` (averaged weights): a GeneratorSource, or an inpainting G's Completer."""

    key: str  # "parzen", "class_fd" or "completion_agreement": names the scores in cards
    name: str  # for people
    cheap: Callable[[Any], float]
    full: Callable[[Any, int], float]  # (generator, n_samples)
    lower_is_better: bool
    load: Callable[[Path], Any] = load_generator
    of_state: Callable[[dict, TrainConfig, str], Any] = torch_source

    def best(self, scores: dict) -> object:
        return (min if self.lower_is_better else max)(scores, key=scores.get)

    def ranked(self, scores: dict) -> list:
        return sorted(scores, key=scores.get, reverse=not self.lower_is_better)


def criterion(config: TrainConfig, mnist: MNIST) -> Criterion:
    """Validation Parzen for an unconditional G, validation class-conditional FD for a
    conditional one, validation completion agreement for an inpainting one (module doc)."""
    classes = config.classes
    if config.inpainting:
        classifier, valid = load_classifier(), mnist.valid

        def agreement(completer: Any, n: int) -> float:
            return completion_agreement(completer, valid.images[:n], valid.labels[:n],
                                        classifier, SELECTION_SEED)

        return Criterion("completion_agreement", "validation completion agreement (mean over "
                         "the mask families, half hidden, of the share of completions the "
                         "classifier calls the image's digit; higher is better)",
                         lambda c: agreement(c, CHEAP_IMAGES), agreement,
                         lower_is_better=False, load=load_completer, of_state=torch_completer)
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
                    score: Callable[[Any], float] | None = None,
                    load: Callable[[Path], Any] = load_generator
                    ) -> dict[int, tuple[Path, float]]:
    """`score` (default: the cheap validation Parzen) of each generator snapshot of `run`
    as `load` reads it (only those with a discriminator snapshot beside them, if asked), by
    epoch."""
    snapshots = generator_snapshots(run, with_discriminator)
    if not snapshots:
        raise FileNotFoundError(f"{run / SNAPSHOTS} holds no generator-epoch-*.pt")
    score = score or (lambda source: cheap_validation_parzen(source, mnist))
    return {epoch: (f, score(load(f)))
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
        cheap = (f"{CHEAP_PER_CLASS} samples of each class" if self.criterion == "class_fd"
                 else f"{CHEAP_IMAGES} validation images per mask family")
        return {"by": f"full-size {self.by}, of the {len(self.full)} best snapshots by the "
                      f"same score on {cheap}",
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
    rule = criterion(load_config(run), mnist)
    scored = snapshot_scores(run, mnist, progress, with_discriminator, rule.cheap, rule.load)
    cheap = {epoch: score for epoch, (_, score) in scored.items()}
    top = rule.ranked(cheap)[:finalists]
    full = {epoch: rule.full(rule.load(scored[epoch][0]), n_samples)
            for epoch in tqdm(top, desc="finalists, full size", disable=not progress)}
    best = rule.best(full)
    return Selection(best, scored[best][0], cheap, full, rule.key, rule.name)


# A window is eligible only if at most this fraction of its samples is nearer a training
# image than 99% of validation images are. The export's check allows 2% on 2,000 samples
# (standard error about 0.3 points near 2%): the margin keeps chance from failing it.
WINDOW_MEMORISATION_LIMIT = 0.015

# A conditional window is eligible only if the classifier calls at least this share of its
# samples of every class the class asked for (docs/conditional.md: the model's target). The
# samples are drawn on SELECTION_SEED's latents, which no reported evaluation uses (those
# use seeds 0, 1, 2), so the reported agreement is measured on latents selection never saw.
LABEL_AGREEMENT_FLOOR = 0.97
SELECTION_SEED = 100


@dataclass
class WindowSelection:
    """Which window of snapshots a run exports averaged, and the scores that chose it."""

    window: tuple[int, int]  # first and last epoch averaged
    count: int  # snapshots averaged
    scores: dict[str, dict[str, float]]  # "200:600" -> validation score and memorisation
    by: str = "validation Parzen"  # Criterion.name
    agreement_floor: float | None = None  # conditional runs: the label agreement required
    memorisation_checked: bool = True  # False for an inpainting G (see select_window)

    def to_card(self) -> dict:
        rule = (f" and whose worst-class label agreement (seed {SELECTION_SEED}) is at least "
                f"{self.agreement_floor:.0%}" if self.agreement_floor is not None else "")
        among = (", among windows whose memorisation on validation images is at most "
                 f"{WINDOW_MEMORISATION_LIMIT:.1%}{rule}" if self.memorisation_checked else
                 " (no memorisation check: an inpainting G draws no image of its own)")
        return {"by": f"full-size {self.by} of G averaged over each window's snapshots{among}",
                "window": list(self.window), "snapshots_averaged": self.count,
                "windows": self.scores}


def select_window(run: Path, mnist: MNIST, windows: list[tuple[int, int]],
                  n_samples: int = 10_000, progress: bool = True,
                  memorisation_limit: float = WINDOW_MEMORISATION_LIMIT,
                  agreement_floor: float = LABEL_AGREEMENT_FLOOR) -> WindowSelection:
    """Of `windows`, the one whose averaged G has the best full-size validation score (the
    run's criterion) among those whose samples pass the memorisation limit against
    validation images and, for a conditional G, whose every class reaches `agreement_floor`
    of label agreement. An inpainting G has no samples of its own to compare with training
    images (it completes validation images, half of each kept as it is): it is ranked by its
    score alone."""
    if not windows:
        raise ValueError("no windows to choose from")
    config = load_config(run)
    rule = criterion(config, mnist)
    score_key = f"validation_{rule.key}"
    if not config.inpainting:
        _, d_valid = nearest_neighbours(mnist.valid.images, mnist.train.images)
    scores, counts = {}, {}
    for first, last in tqdm(windows, desc="averaged windows", disable=not progress):
        g_state, epochs = average_generator(run, first, last)
        key = f"{epochs[0]}:{epochs[-1]}"
        source = rule.of_state(g_state, config, f"{run} average {key}")
        counts[key] = len(epochs)
        if config.inpainting:
            scores[key] = {score_key: rule.full(source, n_samples)}
            continue
        samples = source.sample(n_samples, 0)  # a conditional G: labels from the prior
        memo = memorisation_from_distances(
            nearest_neighbours(samples, mnist.train.images)[1], d_valid)
        score = (validation_parzen_of(samples, mnist).ll if rule.key == "parzen"
                 else rule.full(source, n_samples))
        scores[key] = {score_key: score, "validation_memorisation": memo.closer_than_test_p1}
        if config.classes:
            scores[key]["worst_class_label_agreement"] = worst_class_agreement(
                source, n_samples // config.classes)
    eligible = {k: v[score_key] for k, v in scores.items()
                if v.get("validation_memorisation", 0.0) <= memorisation_limit
                and v.get("worst_class_label_agreement", 1.0) >= agreement_floor}
    if not eligible:
        raise ValueError(f"no window has at most {memorisation_limit:.1%} of its samples nearer "
                         "a training image than 99% of validation images are"
                         + (f" and every class's label agreement at least {agreement_floor:.0%}"
                            if config.classes else "") + f": {scores}")
    best = rule.best(eligible)
    first, last = (int(e) for e in best.split(":"))
    return WindowSelection((first, last), counts[best], scores, rule.name,
                           agreement_floor if config.classes else None,
                           memorisation_checked=not config.inpainting)


def worst_class_agreement(source: GeneratorSource, n_per_class: int,
                          classifier_dir: Path = CLASSIFIER_DIR) -> float:
    """The lowest, over classes k, share of G(z, k) the classifier calls k, on
    SELECTION_SEED's latents (no test image is involved: only G and the classifier)."""
    images, labels = class_samples(source, n_per_class, SELECTION_SEED)
    agreement = label_agreement(labels, predict(load_classifier(classifier_dir), images),
                                source.classes)
    return min(agreement.per_class)
