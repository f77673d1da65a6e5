"""How well an encoder E(x) ~ z inverts its G (§7.2, docs/inference.md), on test images,
which nothing was selected on, beside the latent-search baselines of
training/inference/search.py under one stated SearchBudget:

- E: z = E(x), on every test image asked for, and on the baselines' subset;
- nearest: the z of the nearest (all pixels) of the budget's prior samples G(z);
- nearest + refine: the search baseline itself, Adam on z from the nearest candidate;
- E + refine: the same Adam steps from E's z instead.

Each is measured by the mean squared pixel error of its reconstruction G(z) against x (with
its standard error), by how often the classifier gives G(z) the true label of x, and by its
seconds per image. On G's own samples x = G(z), z from the seed contract: how near E(x)
comes to z (mean squared error beside the prior's variance, what guessing the prior's mean
scores, and cosine similarity) and how near G(E(x)) comes to x.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from service.contract.card import Latent
from training.data.mnist import Split
from training.evaluation.classifier import predict
from training.inference.search import SearchBudget, masked_error, nearest_candidate, refine

Encode = Callable[[np.ndarray], np.ndarray]  # (n, 784) images in [0, 1] -> (n, dim) z


@dataclass(frozen=True)
class InferencePlan:
    """What the evaluation measures on: written into the report beside the numbers."""

    test_images: int = 10_000  # the first this many test images, for E alone
    baseline_images: int = 2_000  # the first this many, for every method
    prior_samples: int = 10_000  # G's own samples, for E(G(z)) against z
    prior_seed: int = 1  # their seed-contract seed (the budget's candidates use seed 0)
    budget: SearchBudget = SearchBudget()

    def to_dict(self) -> dict:
        return asdict(self)


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error (ddof 1)."""
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


@torch.no_grad()
def generate(g: nn.Module, z: np.ndarray | torch.Tensor, chunk: int = 1000) -> np.ndarray:
    """G(z) as (n, 784) float32, in chunks."""
    z = torch.as_tensor(z, dtype=torch.float32)
    return torch.cat([g(rows) for rows in z.split(chunk)]).numpy()


def reconstruction_scores(x: np.ndarray, labels: np.ndarray, z: np.ndarray, g: nn.Module,
                          classifier, seconds: float) -> dict:
    """Pixel error of G(z) against x, the share the classifier labels as x's label, and the
    seconds it took to find z, per image."""
    images = generate(g, z)
    xt = torch.from_numpy(x)
    mse, se = mean_and_se(masked_error(torch.from_numpy(images), xt, torch.ones_like(xt)))
    agree = (predict(classifier, images) == labels).astype(np.float64)
    share, share_se = mean_and_se(agree)
    return {"pixel_mse": mse, "pixel_mse_se": se, "label_agreement": share,
            "label_agreement_se": share_se, "seconds_per_image": seconds / len(x),
            "n": len(x)}


def _timed(find_z: Callable[[], np.ndarray | torch.Tensor]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    z = find_z()
    return np.asarray(z, np.float32), time.perf_counter() - started


def baseline_latents(encode: Encode, g: nn.Module, latent: Latent, x: np.ndarray,
                     budget: SearchBudget) -> dict[str, tuple[np.ndarray, float]]:
    """Each method's z for the images x (all pixels known), with the seconds it took; a
    refined method's time includes finding its start."""
    xt = torch.from_numpy(x)
    known = torch.ones_like(xt)
    z_e, t_e = _timed(lambda: encode(x))
    z_n, t_n = _timed(lambda: nearest_candidate(g, latent, xt, known, budget))
    z_er, t_er = _timed(lambda: refine(g, latent, xt, known, torch.from_numpy(z_e), budget))
    z_nr, t_nr = _timed(lambda: refine(g, latent, xt, known, torch.from_numpy(z_n), budget))
    return {"encoder": (z_e, t_e), "encoder_refined": (z_er, t_e + t_er),
            "nearest": (z_n, t_n), "nearest_refined": (z_nr, t_n + t_nr)}


def prior_recovery(encode: Encode, g: nn.Module, latent: Latent, n: int, seed: int) -> dict:
    """On x = G(z), z of the seed contract: ||E(x) - z||^2 / dim beside the prior's
    variance (the score of always guessing its mean), the cosine of E(x) with z, and the
    pixel error of G(E(x)) against x."""
    z = latent.sample(n, seed)
    x = generate(g, z)
    z_hat = encode(x)
    z_mse, z_se = mean_and_se(((z_hat - z) ** 2).mean(axis=1))
    cosine = (z_hat * z).sum(axis=1) / (np.linalg.norm(z_hat, axis=1) * np.linalg.norm(z, axis=1))
    cos_mean, cos_se = mean_and_se(cosine)
    again = generate(g, z_hat)
    pixel, pixel_se = mean_and_se(((again - x) ** 2).mean(axis=1))
    variance = ((latent.high - latent.low) ** 2 / 12 if latent.distribution == "uniform"
                else 1.0)
    return {"z_mse": z_mse, "z_mse_se": z_se, "prior_variance": variance,
            "cosine": cos_mean, "cosine_se": cos_se, "pixel_mse": pixel,
            "pixel_mse_se": pixel_se, "n": n, "seed": seed}


def evaluate_inference(encode: Encode, g: nn.Module, latent: Latent, test: Split, classifier,
                       plan: InferencePlan = InferencePlan()) -> dict:
    """The report (see the module doc); `test` is MNIST's test split, `classifier` the
    project's (training/evaluation/classifier.py)."""
    started = time.perf_counter()
    x_all = test.images[:plan.test_images]
    y_all = test.labels[:plan.test_images]
    z_e, t_e = _timed(lambda: encode(x_all))
    x, y = x_all[:plan.baseline_images], y_all[:plan.baseline_images]
    subset = {key: reconstruction_scores(x, y, z, g, classifier, seconds)
              for key, (z, seconds) in baseline_latents(encode, g, latent, x,
                                                        plan.budget).items()}
    return {
        "plan": plan.to_dict(),
        "threads": torch.get_num_threads(),
        "test": {"images": f"test images 0-{len(x_all) - 1}",
                 "encoder": reconstruction_scores(x_all, y_all, z_e, g, classifier, t_e),
                 "classifier_accuracy_on_x": float(np.mean(predict(classifier, x_all) == y_all))},
        "subset": {"images": f"test images 0-{len(x) - 1}", "methods": subset,
                   "classifier_accuracy_on_x": float(np.mean(predict(classifier, x) == y))},
        "prior": prior_recovery(encode, g, latent, plan.prior_samples, plan.prior_seed),
        "seconds": round(time.perf_counter() - started, 1),
    }


def render_markdown(report: dict) -> str:
    """inference.md: the report's tables."""
    plan, budget = report["plan"], report["plan"]["budget"]
    test, subset, prior = report["test"], report["subset"], report["prior"]

    def row(name: str, s: dict) -> str:
        return (f"| {name} | {s['pixel_mse']:.5f} ± {s['pixel_mse_se']:.5f} | "
                f"{s['label_agreement']:.2%} ± {s['label_agreement_se']:.2%} | "
                f"{s['seconds_per_image'] * 1e3:.2f} |")

    header = ("| method | pixel MSE of G(z) vs x (± se) | classifier gives G(z) x's label "
              "| ms per image |\n| --- | --- | --- | --- |")
    refine_text = f"{budget['steps']} Adam steps on z (lr {budget['lr']})"
    names = {"encoder": "E(x)", "encoder_refined": f"E(x), then {refine_text}",
             "nearest": f"nearest of {budget['candidates']:,} prior samples G(z)",
             "nearest_refined": f"nearest of {budget['candidates']:,}, then {refine_text}"}
    lines = [
        "# Learned approximate inference (§7.2): E(x) ~ z",
        "",
        f"Test images only (selection used validation images). {report['threads']} torch "
        f"thread(s); the whole evaluation took {report['seconds']} s.",
        "",
        f"## E on {test['images']} ({test['encoder']['n']:,})",
        "",
        header,
        row("E(x)", test["encoder"]),
        f"| x itself (the classifier's accuracy) | 0 | {test['classifier_accuracy_on_x']:.2%} "
        "| — |",
        "",
        f"## Against latent search, on {subset['images']} ({plan['baseline_images']:,})",
        "",
        f"Budget: {budget['candidates']:,} candidates (seed-contract seed {budget['seed']}), "
        f"{budget['steps']} Adam steps at lr {budget['lr']}; a refined method's time "
        "includes finding its start.",
        "",
        header,
        *(row(names[key], s) for key, s in subset["methods"].items()),
        f"| x itself (the classifier's accuracy) | 0 | {subset['classifier_accuracy_on_x']:.2%}"
        " | — |",
        "",
        f"## On G's own samples ({prior['n']:,}, seed {prior['seed']})",
        "",
        "| measure | value | reference |",
        "| --- | --- | --- |",
        f"| mean squared error of E(G(z)) vs z, per coordinate | {prior['z_mse']:.4f} ± "
        f"{prior['z_mse_se']:.4f} | {prior['prior_variance']:.4f}: the prior's variance, what "
        "guessing its mean scores |",
        f"| cosine of E(G(z)) with z | {prior['cosine']:.4f} ± {prior['cosine_se']:.4f} | 0 "
        "for a guess independent of z |",
        f"| pixel MSE of G(E(G(z))) vs G(z) | {prior['pixel_mse']:.5f} ± "
        f"{prior['pixel_mse_se']:.5f} | E(x) on test images: {test['encoder']['pixel_mse']:.5f} |",
        "",
    ]
    return "\n".join(lines)
