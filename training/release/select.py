"""Which weights of a run to release, chosen on validation images only (the test set is
never looked at): the best snapshot (`export --select`), or the best window of snapshots
to average (`export --average`). Also the full-size validation Parzen of
`python -m training validate`, to compare runs without the test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.mnist import MNIST
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


def snapshot_scores(run: Path, mnist: MNIST, progress: bool = True,
                    with_discriminator: bool = False) -> dict[int, tuple[Path, float]]:
    """Cheap validation Parzen of each generator snapshot of `run` (only those with a
    discriminator snapshot beside them, if asked), by epoch."""
    snapshots = generator_snapshots(run, with_discriminator)
    if not snapshots:
        raise FileNotFoundError(f"{run / SNAPSHOTS} holds no generator-epoch-*.pt")
    return {epoch: (f, cheap_validation_parzen(load_generator(f), mnist))
            for epoch, f in tqdm(snapshots.items(), desc=f"scoring {run.name}",
                                 disable=not progress)}


@dataclass
class Selection:
    """Which snapshot a run exports, and the validation scores that chose it."""

    epoch: int
    best: Path  # that epoch's generator snapshot
    cheap: dict[int, float]  # every snapshot: cheap validation Parzen, by epoch
    full: dict[int, float]  # the finalists: full-size validation Parzen, by epoch

    def to_card(self) -> dict:
        return {"by": f"full-size validation Parzen of the {len(self.full)} best snapshots "
                      "by cheap validation Parzen",
                "scores": self.cheap, "finalists": self.full}


def select_snapshot(run: Path, mnist: MNIST, progress: bool = True,
                    with_discriminator: bool = False, finalists: int = 3,
                    n_samples: int = 10_000) -> Selection:
    """The snapshot of `run` with the best full-size validation Parzen among the `finalists`
    best by the cheap estimate. The cheap one ranks every snapshot in seconds but saturates
    once runs are good (139.8 vs 139.9 where full size gives 208.6 vs 204.0)."""
    if finalists < 1:
        raise ValueError(f"finalists must be >= 1, got {finalists}")
    scored = snapshot_scores(run, mnist, progress, with_discriminator)
    cheap = {epoch: score for epoch, (_, score) in scored.items()}
    top = sorted(cheap, key=cheap.get, reverse=True)[:finalists]
    full = {epoch: validation_parzen(load_generator(scored[epoch][0]), mnist, n_samples).ll
            for epoch in tqdm(top, desc="finalists, full size", disable=not progress)}
    best = max(full, key=full.get)
    return Selection(best, scored[best][0], cheap, full)


# A window is eligible only if at most this fraction of its samples is nearer a training
# image than 99% of validation images are. The export's check allows 2% on 2,000 samples
# (standard error about 0.3 points near 2%): the margin keeps chance from failing it.
WINDOW_MEMORISATION_LIMIT = 0.015


@dataclass
class WindowSelection:
    """Which window of snapshots a run exports averaged, and the scores that chose it."""

    window: tuple[int, int]  # first and last epoch averaged
    count: int  # snapshots averaged
    scores: dict[str, dict[str, float]]  # "200:600" -> validation Parzen and memorisation

    def to_card(self) -> dict:
        return {"by": "full-size validation Parzen of G averaged over each window's snapshots, "
                      "among windows whose memorisation on validation images is at most "
                      f"{WINDOW_MEMORISATION_LIMIT:.1%}",
                "window": list(self.window), "snapshots_averaged": self.count,
                "windows": self.scores}


def select_window(run: Path, mnist: MNIST, windows: list[tuple[int, int]],
                  n_samples: int = 10_000, progress: bool = True,
                  memorisation_limit: float = WINDOW_MEMORISATION_LIMIT) -> WindowSelection:
    """Of `windows`, the one whose averaged G has the best full-size validation Parzen among
    those whose samples pass the memorisation limit against validation images."""
    if not windows:
        raise ValueError("no windows to choose from")
    config = load_config(run)
    _, d_valid = nearest_neighbours(mnist.valid.images, mnist.train.images)
    scores, counts = {}, {}
    for first, last in tqdm(windows, desc="averaged windows", disable=not progress):
        g_state, epochs = average_generator(run, first, last)
        key = f"{epochs[0]}:{epochs[-1]}"
        samples = torch_source(g_state, config, f"{run} average {key}").sample(n_samples, 0)
        memo = memorisation_from_distances(
            nearest_neighbours(samples, mnist.train.images)[1], d_valid)
        scores[key] = {"validation_parzen": validation_parzen_of(samples, mnist).ll,
                       "validation_memorisation": memo.closer_than_test_p1}
        counts[key] = len(epochs)
    eligible = [k for k, v in scores.items() if v["validation_memorisation"] <= memorisation_limit]
    if not eligible:
        raise ValueError(f"every window has over {memorisation_limit:.1%} of its samples nearer "
                         f"a training image than 99% of validation images are: {scores}")
    best = max(eligible, key=lambda k: scores[k]["validation_parzen"])
    first, last = (int(e) for e in best.split(":"))
    return WindowSelection((first, last), counts[best], scores)
