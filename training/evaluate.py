"""`python -m training evaluate PATH`: every measurement of a generator in one report.

PATH is a run folder, a training checkpoint, a generator snapshot, a `generator.onnx`, or
a model folder with `model.json`: what is served is what is measured. Latents follow the
service's seed contract (DESIGN.md): z = default_rng(seed).uniform(low, high, (n, dim)).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.latent_paths import lerp, slerp
from training.averaging import average_generator
from training.class_coverage import class_coverage, inception_score, softmax
from training.classifier import DEFAULT_DIR as CLASSIFIER_DIR
from training.classifier import classify, load_classifier
from training.config import TrainConfig
from training.data import MNIST
from training.figures import figure2, figure3, training_curves
from training.frechet import frechet_between
from training.memorisation import (
    memorisation_check,
    memorisation_from_distances,
    nearest_neighbours,
)
from training.networks import SQRT3, build_networks
from training.onnx_models import cpu_session, run_batched
from training.parzen import ParzenResult, parzen_protocol
from training.train import SNAPSHOT


@dataclass
class GeneratorSource:
    """A generator behind one function: latents (n, dim) float32 -> images (n, 784)."""

    description: str
    latent_dim: int
    distribution: str  # "uniform" or "normal"
    low: float
    high: float
    generate: Callable[[np.ndarray], np.ndarray]

    def latents(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.distribution == "uniform":
            return rng.uniform(self.low, self.high, (n, self.latent_dim)).astype(np.float32)
        return rng.standard_normal((n, self.latent_dim)).astype(np.float32)

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.images(self.latents(n, seed))

    def images(self, z: np.ndarray) -> np.ndarray:
        parts = [self.generate(z[i:i + 1000]) for i in range(0, len(z), 1000)]
        x = np.concatenate(parts).reshape(len(z), -1).astype(np.float32)
        if not np.isfinite(x).all():  # a diverged generator: nothing below would mean anything
            raise ValueError(f"{self.description} produces non-finite images")
        return x


def _torch_source(state: dict, config: TrainConfig, description: str) -> GeneratorSource:
    if not config.image_data:
        raise ValueError(f"{description} is a {config.dataset} generator, not an MNIST one")
    g, _ = build_networks(config)
    g.load_state_dict(state)
    g.eval()

    def generate(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return g(torch.from_numpy(z)).numpy()

    low, high = (-SQRT3, SQRT3) if config.noise == "uniform" else (0.0, 0.0)
    return GeneratorSource(description, config.latent_dim, config.noise, low, high, generate)


def _onnx_source(path: Path, card: dict | None) -> GeneratorSource:
    session = cpu_session(path)
    if card is not None:
        latent = card["latent"]
        dim, dist = int(latent["dim"]), latent["distribution"]
        low, high = float(latent.get("low", 0.0)), float(latent.get("high", 0.0))
    else:  # a bare file: the paper's prior, size from the graph
        dim, dist, low, high = int(session.get_inputs()[0].shape[1]), "uniform", -SQRT3, SQRT3
    return GeneratorSource(str(path), dim, dist, low, high,
                           lambda z: run_batched(session, z)[0])


def load_generator(path: str | Path) -> GeneratorSource:
    """Any of the accepted PATH forms (see module doc) as a GeneratorSource."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.json").is_file():
            return _onnx_source(p / "generator.onnx", json.loads((p / "model.json").read_text()))
        if (p / "checkpoint.pt").is_file():
            return load_generator(p / "checkpoint.pt")
        raise FileNotFoundError(f"{p} holds neither model.json nor checkpoint.pt")
    if not p.is_file():
        raise FileNotFoundError(f"no generator at {p}")
    if p.suffix == ".onnx":
        card_path = p.parent / "model.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else None
        return _onnx_source(p, card)
    state = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "generator" in state and "config" in state:
        return _torch_source(state["generator"], TrainConfig.from_dict(state["config"]), str(p))
    config_path = p.parent.parent / "config.json"  # run/snapshots/generator-epoch-N.pt
    if not config_path.is_file():
        raise FileNotFoundError(f"{p} is a bare generator state; its run's config.json was "
                                f"expected at {config_path}")
    return _torch_source(state, TrainConfig.load(config_path), str(p))


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
    snapshots = sorted((int(m.group(1)), f) for f in (run / "snapshots").glob("*.pt")
                       if (m := SNAPSHOT.search(f.name)) and not (
                           with_discriminator and not f.with_name(
                               f.name.replace("generator", "discriminator")).is_file()))
    if not snapshots:
        raise FileNotFoundError(f"{run / 'snapshots'} holds no generator-epoch-*.pt")
    return {epoch: (f, cheap_validation_parzen(load_generator(f), mnist))
            for epoch, f in tqdm(snapshots, desc=f"scoring {run.name}", disable=not progress)}


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
    config = TrainConfig.load(run / "config.json")
    _, d_valid = nearest_neighbours(mnist.valid.images, mnist.train.images)
    scores, counts = {}, {}
    for first, last in tqdm(windows, desc="averaged windows", disable=not progress):
        g_state, epochs = average_generator(run, first, last)
        key = f"{epochs[0]}:{epochs[-1]}"
        samples = _torch_source(g_state, config, f"{run} average {key}").sample(n_samples, 0)
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


def evaluate(source: GeneratorSource, out_dir: Path, mnist: MNIST,
             classifier_dir: Path = CLASSIFIER_DIR, seeds: tuple[int, ...] = (0, 1, 2),
             n_samples: int = 10_000, n_memorisation: int = 2000, progress: bool = True,
             metrics_file: Path | None = None,
             validation_parzen: dict[int, float] | None = None) -> dict:
    """Run every measurement, write report.json, report.md and the PNGs into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = len(seeds) + 5
    bar = tqdm(total=stages, desc="evaluate", disable=not progress)

    def stage(name: str) -> None:
        bar.set_postfix_str(name)

    # Parzen: the protocol for each seed, and the real-data ceiling beside it
    runs = []
    samples = {}
    for seed in seeds:
        stage(f"parzen seed {seed}")
        samples[seed] = source.sample(n_samples, seed)
        r = parzen_protocol(samples[seed], mnist.valid.images[:1000], mnist.test.images)
        runs.append({"seed": seed, "ll": r.ll, "se": r.se, "sigma": r.sigma})
        bar.update()
    stage("parzen ceiling")
    ceiling = parzen_protocol(mnist.train.images[:n_samples], mnist.valid.images[:1000],
                              mnist.test.images)
    bar.update()
    lls = np.array([r["ll"] for r in runs])
    parzen = {
        "ll": float(lls.mean()),
        "se": float(np.mean([r["se"] for r in runs])),
        "spread_over_seeds": float(lls.std(ddof=1)) if len(lls) > 1 else 0.0,
        "sigma": runs[0]["sigma"],
        "n_samples": n_samples,
        "seeds": runs,
        "ceiling_real_train_images": {"ll": ceiling.ll, "se": ceiling.se,
                                      "sigma": ceiling.sigma},
    }

    # classifier scores on the first seed's samples
    stage("classifier")
    classifier = load_classifier(classifier_dir)
    first = samples[seeds[0]]
    s_logits, s_feats = classify(classifier, first)
    t_logits, t_feats = classify(classifier, mnist.test.images)
    v_logits, v_feats = classify(classifier, mnist.valid.images)
    degraded = {}
    for digit in range(10):
        keep = mnist.valid.labels != digit
        degraded[digit] = (frechet_between(v_logits[keep], t_logits),
                           frechet_between(v_feats[keep], t_feats))
    fd = {
        space: {
            "samples_vs_test": frechet_between(s, t),
            "floor_valid_vs_test": frechet_between(v, t),
            "one_digit_removed_vs_test_mean": float(np.mean([d[i] for d in degraded.values()])),
        }
        for i, (space, s, t, v) in enumerate((("logits", s_logits, t_logits, v_logits),
                                              ("features", s_feats, t_feats, v_feats)))
    }
    coverage = asdict(class_coverage(s_logits, mnist.test.labels))
    coverage["inception_score_test_images"] = inception_score(softmax(t_logits))
    bar.update()

    stage("memorisation")
    memo = memorisation_check(first[:n_memorisation], mnist.test.images[:n_memorisation],
                              mnist.train.images)
    bar.update()

    stage("figures")
    index, _ = nearest_neighbours(first[:30], mnist.train.images)
    figure2(out_dir / "figure2_samples_and_nearest.png", first[:30], mnist.train.images[index])
    ends = source.latents(16, seed=12345)
    for method, path_fn in (("linear", lerp), ("slerp", slerp)):
        paths = np.stack([source.images(path_fn(ends[2 * r], ends[2 * r + 1], 10))
                          for r in range(8)])
        figure3(out_dir / f"figure3_interpolation_{method}.png", paths)
    if metrics_file is not None and metrics_file.is_file():
        training_curves(out_dir / "training_curves.png", metrics_file, validation_parzen)
    bar.update()
    bar.close()

    report = {
        "generator": source.description,
        "parzen": parzen,
        "classifier_fd": fd,
        "modes": coverage,
        "memorisation": asdict(memo),
        "validation_parzen_by_epoch": validation_parzen,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))
    return report


def render_markdown(report: dict) -> str:
    p, fd, modes, memo = (report["parzen"], report["classifier_fd"], report["modes"],
                          report["memorisation"])
    c = p["ceiling_real_train_images"]
    hist = " ".join(f"{i}:{h:.1%}" for i, h in enumerate(modes["histogram"]))
    lines = [
        f"# Evaluation of `{report['generator']}`",
        "",
        "| measure | generator | reference |",
        "| --- | --- | --- |",
        f"| Parzen LL, test (nats), mean of {len(p['seeds'])} seeds | "
        f"{p['ll']:.1f} ± {p['se']:.1f} (spread {p['spread_over_seeds']:.2f}, "
        f"σ {p['sigma']:.3f}) | real train images: {c['ll']:.1f} ± {c['se']:.1f}; "
        "paper: 225 ± 2 |",
    ]
    for space in ("logits", "features"):
        f = fd[space]
        lines.append(f"| classifier FD ({space}) | {f['samples_vs_test']:.3f} | floor (valid vs "
                     f"test) {f['floor_valid_vs_test']:.3f}; one digit removed "
                     f"{f['one_digit_removed_vs_test_mean']:.3f} |")
    lines += [
        f"| classes with ≥ 5% of samples | {modes['classes_at_5_percent']} / 10 | 10 |",
        f"| KL(predicted classes ‖ test labels) | {modes['kl_to_reference']:.4f} | 0 |",
        f"| classifier Inception score | {modes['inception_score']:.2f} | test images: "
        f"{modes['inception_score_test_images']:.2f} (max 10) |",
        f"| samples nearer their nearest train image than 99% of test images | "
        f"{memo['closer_than_test_p1']:.2%} | 1% ({'clean' if memo['clean'] else 'NOT clean'}) |",
        "",
        f"Predicted digits: {hist}",
        "",
        f"Nearest-train-image distance quantiles, samples: {_q(memo['sample_quantiles'])}; "
        f"test images: {_q(memo['test_quantiles'])}.",
        "",
        "![Figure 2](figure2_samples_and_nearest.png)",
        "",
        "![Figure 3, linear](figure3_interpolation_linear.png)",
        "",
        "![Figure 3, slerp](figure3_interpolation_slerp.png)",
        "",
        f"Wall time: {report['seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def _q(quantiles: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in quantiles.items())
