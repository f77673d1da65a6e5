"""Measures of §7.3's inpainting model p(x_S | x_not S) (docs/inpainting.md): G completes the
pixels S that a mask hides, given the visible ones. On test digits, for each mask family of
service/contract/masks.py with half of the pixels hidden:

- label agreement: the share of completions the classifier calls the digit the whole image
  was (do the completed strokes make the right digit?);
- hidden MSE: the squared error of a completion against the true pixels, averaged over the
  hidden pixels only (the visible ones are kept: no error there);
- diversity: the std over k completions of one image (k latents) of each hidden pixel,
  averaged over the hidden pixels (a G that ignores z scores 0);

beside the masked input as it is (hidden pixels 0), and against the baseline that needs no
inpainting model: search the unconditional G's latent space for the image that best
matches the visible pixels (training/inference/search.py) and take its hidden pixels.
The unconditional measures (FD, precision and recall, Parzen) are of p(x), not of
p(x_S | x_not S), and are not computed for an inpainting model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.contract.card import CARD_FILE, Latent, ModelCard, read_card
from service.contract.masks import FAMILIES, masks
from training.config import TrainConfig
from training.data.mnist import IMAGE_SHAPE, MNIST
from training.evaluation.classifier import DEFAULT_DIR as CLASSIFIER_DIR
from training.evaluation.classifier import load_classifier, predict
from training.figures.inpainting import inpainting_figure
from training.gan.networks import build_networks, latent_prior
from training.gan.train import Batch
from training.inference.search import SearchBudget, load_frozen_generator, search
from training.onnx_io import cpu_session
from training.paths import PAPER_MODEL
from training.runs import CHECKPOINT, CONFIG, load_config

HIDDEN = 0.5  # the fraction hidden when measuring; training drew 0.25-0.75 (TRAIN_HIDDEN)
MASK_SEED = 0  # masks(family, n, MASK_SEED, ...): image i's mask is the same for any n
LATENT_SEED = 0  # completion j of every image: G on the seed contract's latents of seed + j
COMPLETIONS = 8  # k, per image, for the diversity (and averaged in the other measures)
BASELINE_IMAGES = 500  # the first test images of each family that the baseline searches
FIGURE_ROWS = 4  # test digits per family in the figures
REPORT_JSON, REPORT_MD = "inpainting.json", "inpainting.md"
FIGURE = "inpainting_{family}.png"
CHUNK = 1000  # images per network call
SIZE = IMAGE_SHAPE[1:]


def completion(g: nn.Module, z: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x_hat = m * G(z, x * (1 - m), m) + (1 - m) * x, on flat (n, 784) images and masks
    (1 = hidden): G reads the visible pixels and the mask, never a hidden pixel's value, and
    its image is kept only where m hides. Training's composite (Batch.fake) exactly, so the
    exported graph and every measure complete images as training did."""
    return Batch(x, torch.cat([x * (1 - m), m], dim=1), hidden=m).fake(g, z)


@dataclass
class Completer:
    """An inpainting G behind one function: latents z (n, dim), images x (n, 784) and masks
    m (n, 784), 1 where hidden, float32 -> the completed images (n, 784)."""

    description: str
    latent: Latent
    complete: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

    def images(self, z: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        parts = [self.complete(z[i:i + CHUNK], x[i:i + CHUNK], m[i:i + CHUNK])
                 for i in range(0, len(z), CHUNK)]
        out = np.concatenate(parts).reshape(len(z), -1).astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"{self.description} produces non-finite images")
        return out

    def completions(self, x: np.ndarray, m: np.ndarray, k: int, seed: int) -> np.ndarray:
        """(k, n, 784): completion j of every image on the seed contract's latents of
        seed + j (image i's latents do not depend on n)."""
        return np.stack([self.images(self.latent.sample(len(x), seed + j), x, m)
                         for j in range(k)])


def torch_completer(state: dict, config: TrainConfig, description: str) -> Completer:
    """The inpainting G of `config` with the weights `state`."""
    if not config.inpainting:
        raise ValueError(f"{description}: not an inpainting generator (its config has "
                         "inpainting false)")
    g, _ = build_networks(config)
    g.load_state_dict(state)
    g.eval()

    def complete(z: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return completion(g, *(torch.from_numpy(a) for a in (z, x, m))).numpy()

    return Completer(description, latent_prior(config), complete)


def onnx_completer(path: Path, card: ModelCard, description: str | None = None,
                   threads: int = 1) -> Completer:
    """An exported inpainting G, `path`, whose card's `inpainting` names its inputs, run by
    onnxruntime on `threads` threads (1: the baseline's timing is taken on one too)."""
    if card.inpainting is None:
        raise ValueError(f"{path}: its card '{card.name}' has no 'inpainting' section, not an "
                         "inpainting model")
    session = cpu_session(path, threads)
    visible, mask = card.inpainting.visible_input, card.inpainting.mask_input

    def complete(z: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        return session.run(None, {"z": z, visible: x.reshape(-1, *IMAGE_SHAPE),
                                  mask: m.reshape(-1, *SIZE)})[0]

    return Completer(description or f"{path} (onnxruntime, {threads} thread"
                     f"{'s' * (threads != 1)})", card.latent, complete)


def is_inpainting(path: str | Path) -> bool:
    """Whether PATH (a model folder or its generator.onnx, a run folder, its checkpoint or a
    snapshot) is an inpainting model: its card has `inpainting`, or its run's config says so."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if (folder / CARD_FILE).is_file():
        return read_card(folder).inpainting is not None
    for run in (folder, folder.parent):  # run/checkpoint.pt, run/snapshots/generator-*.pt
        if (run / CONFIG).is_file():
            return load_config(run).inpainting
    return False


def load_completer(path: str | Path) -> Completer:
    """An inpainting G from any PATH that is_inpainting takes."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if (folder / CARD_FILE).is_file():
        card = read_card(folder)
        return onnx_completer(folder / card.generator.file, card)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise FileNotFoundError(f"no inpainting generator at {p}")
    state = torch.load(p, map_location="cpu", weights_only=False)
    if "generator" in state and "config" in state:  # a training checkpoint
        return torch_completer(state["generator"], TrainConfig.from_dict(state["config"]),
                               str(p))
    return torch_completer(state, load_config(p.parent.parent), str(p))  # a G snapshot


@dataclass
class SearchBaseline:
    """§7.3 with no model trained for it: search the unconditional G's latent space for the
    z whose G(z) best matches the visible pixels, then keep G(z) where the mask hides."""

    description: str
    g: nn.Module
    latent: Latent
    budget: SearchBudget = SearchBudget()

    def completions(self, x: np.ndarray, m: np.ndarray, restarts: int) -> np.ndarray:
        """(restarts, n, 784): one search per candidate seed 0 .. restarts - 1 (a search is
        deterministic; only its starting candidates differ)."""
        xt, mt = torch.from_numpy(x), torch.from_numpy(m)
        out = []
        for seed in range(restarts):
            budget = dataclasses.replace(self.budget, seed=seed)
            z = torch.from_numpy(search(self.g, self.latent, x * (1 - m), 1 - m, budget))
            with torch.no_grad():
                out.append(Batch(xt, hidden=mt).fake(self.g, z).numpy())
        return np.stack(out)


def load_search_baseline(folder: Path = PAPER_MODEL) -> SearchBaseline:
    """The z-search in the served unconditional G of `folder`."""
    frozen = load_frozen_generator(folder)
    return SearchBaseline(frozen.name, frozen.g, frozen.latent)


def family_masks(family: str, n: int, seed: int = MASK_SEED) -> np.ndarray:
    """(n, 784) float32 masks of `family` hiding HIDDEN of the pixels, 1 where hidden."""
    return masks(family, n, seed, SIZE, HIDDEN).reshape(n, -1).astype(np.float32)


def scores(completions: np.ndarray, x: np.ndarray, m: np.ndarray, labels: np.ndarray,
           classifier) -> dict:
    """The measures of (k, n, 784) completions of the images x (n, 784) under the masks m,
    whose digits are `labels`; every completion counts once."""
    k, n, _ = completions.shape
    predicted = predict(classifier, completions.reshape(k * n, -1)).reshape(k, n)
    hidden = m.sum(axis=1)
    # MSE = mean over completions j and images of  sum_i m_i (x_hat_ji - x_i)^2 / sum_i m_i
    mse = (((completions - x) ** 2 * m).sum(axis=2) / hidden).mean()
    # the same of the mean completion, which error favours (a blur: docs/inpainting.md)
    mse_of_mean = (((completions.mean(axis=0) - x) ** 2 * m).sum(axis=1) / hidden).mean()
    # diversity = mean over images of  sum_i m_i std_j(x_hat_ji) / sum_i m_i
    diversity = ((completions.std(axis=0) * m).sum(axis=1) / hidden).mean()
    return {"label_agreement": float((predicted == labels).mean()), "hidden_mse": float(mse),
            "hidden_mse_of_mean_completion": float(mse_of_mean),
            "diversity": float(diversity), "n_images": n, "completions_per_image": k}


def completion_agreement(completer: Completer, images: np.ndarray, labels: np.ndarray,
                         classifier, seed: int) -> float:
    """Selection's score: the mean over the families of the share of completions (one per
    image, masks and latents of `seed`) that the classifier calls the image's digit."""
    shares = []
    for family in FAMILIES:
        m = family_masks(family, len(images), seed)
        done = completer.images(completer.latent.sample(len(images), seed), images, m)
        shares.append(np.mean(predict(classifier, done) == labels))
    return float(np.mean(shares))


def evaluate_inpainting(completer: Completer, out_dir: Path, mnist: MNIST,
                        n_images: int = 10_000, k: int = COMPLETIONS,
                        baseline: SearchBaseline | None = None,
                        baseline_images: int = BASELINE_IMAGES,
                        classifier_dir: Path = CLASSIFIER_DIR, run: Path | None = None,
                        validation_by_epoch: dict[int, float] | None = None,
                        progress: bool = True) -> dict:
    """Every measure on the first `n_images` test digits per family (the baseline, k
    restarts, on the first `baseline_images` of them); writes inpainting.json,
    inpainting.md, a figure per family and, given the run, its training curves (with the
    validation score of each snapshot, when selection computed them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    baseline = baseline or load_search_baseline()
    classifier = load_classifier(classifier_dir)
    x, y = mnist.test.images[:n_images], mnist.test.labels[:n_images]
    b = min(baseline_images, n_images)
    families, figures = {}, {}
    for family in tqdm(FAMILIES, desc="inpainting", disable=not progress):
        m = family_masks(family, n_images)
        t = time.perf_counter()
        model = completer.completions(x, m, k, LATENT_SEED)
        model_seconds = time.perf_counter() - t
        t = time.perf_counter()
        found = baseline.completions(x[:b], m[:b], k)
        search_seconds = time.perf_counter() - t
        families[family] = {
            "hidden_fraction": float(m.mean()),
            "model": scores(model, x, m, y, classifier),
            "model_on_baseline_images": scores(model[:, :b], x[:b], m[:b], y[:b], classifier),
            "baseline": scores(found, x[:b], m[:b], y[:b], classifier),
            "masked_input": scores((x * (1 - m))[None], x, m, y, classifier),
            "ms_per_completion": {"model": 1e3 * model_seconds / (k * n_images),
                                  "baseline": 1e3 * search_seconds / (k * b)},
        }
        figures[family] = family_figure(out_dir, family, x, m, model, found).name
    if run is not None:
        # here, not above: curves.py imports release/select.py, which imports this module
        from training.figures.curves import training_curves

        figures["training_curves"] = training_curves(
            out_dir / "training_curves.png", run, validation_by_epoch,
            "validation completion agreement (cheap setting)").name
    report = {
        "generator": completer.description,
        "protocol": {
            "split": "test (t10k)", "hidden": HIDDEN, "mask_seed": MASK_SEED,
            "latent_seeds": [LATENT_SEED, LATENT_SEED + k - 1], "completions_per_image": k,
            "n_images": n_images, "baseline_images": b,
            "diversity": "std over the completions of an image (ddof 0) per hidden pixel, "
                         "mean over its hidden pixels, then over images"},
        "baseline": {"generator": baseline.description, "budget": baseline.budget.to_dict(),
                     "restarts": k, "restart_seeds": [0, k - 1],
                     "search": "training/inference/search.py"},
        "classifier_test_accuracy": float(np.mean(predict(classifier, x) == y)),
        "families": families,
        "mean_over_families": {
            side: {key: float(np.mean([families[fam][side][key] for fam in FAMILIES]))
                   for key in ("label_agreement", "hidden_mse", "diversity")}
            for side in ("model", "model_on_baseline_images", "baseline", "masked_input")},
        "ms_per_completion": {side: float(np.mean([families[fam]["ms_per_completion"][side]
                                                   for fam in FAMILIES]))
                              for side in ("model", "baseline")},
        "torch_threads": torch.get_num_threads(),
        "figures": figures,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / REPORT_MD).write_text(render_markdown(report))
    return report


def family_figure(out_dir: Path, family: str, x: np.ndarray, m: np.ndarray,
                  model: np.ndarray, found: np.ndarray) -> Path:
    """The figure of `family`: FIGURE_ROWS of the images (other digits for each family),
    with the model's completions (k, n, 784) and the first search's (restarts, b, 784)."""
    rows = (np.arange(FIGURE_ROWS) + FAMILIES.index(family) * FIGURE_ROWS) % found.shape[1]
    return inpainting_figure(out_dir / FIGURE.format(family=family), x[rows], m[rows],
                             model[:, rows].transpose(1, 0, 2), found[0, rows])


def inpainting_figures(completer: Completer, out_dir: Path, mnist: MNIST,
                       baseline: SearchBaseline | None = None, k: int = COMPLETIONS
                       ) -> dict[str, Path]:
    """The figures evaluate_inpainting draws, alone and in seconds: the same digits, masks
    and latents; the baseline searched once, from the first restart's candidates."""
    baseline = baseline or load_search_baseline()
    n = FIGURE_ROWS * len(FAMILIES)
    x = mnist.test.images[:n]
    figures = {}
    for family in FAMILIES:
        m = family_masks(family, n)
        figures[family] = family_figure(out_dir, family, x, m,
                                        completer.completions(x, m, k, LATENT_SEED),
                                        baseline.completions(x, m, 1))
    return figures


def render_markdown(report: dict) -> str:
    p, fams, mean = report["protocol"], report["families"], report["mean_over_families"]
    n, b = f"{p['n_images']:,}", f"{p['baseline_images']:,}"
    lines = [
        f"# Inpainting evaluation of `{report['generator']}`",
        "",
        f"Test digits, half of the pixels hidden (mask seed {p['mask_seed']}), "
        f"{p['completions_per_image']} completions per image (latent seeds "
        f"{p['latent_seeds'][0]}-{p['latent_seeds'][1]}). Baseline: z-search in "
        f"`{report['baseline']['generator']}` ({report['baseline']['budget']}), "
        f"{report['baseline']['restarts']} restarts, on the first {b} images of each family. "
        f"The classifier's accuracy on the whole test images: "
        f"{report['classifier_test_accuracy']:.2%}.",
        "",
    ]
    measures = (("label agreement", "label_agreement", "{:.2%}"),
                ("hidden-pixel MSE", "hidden_mse", "{:.4f}"),
                ("diversity (std over completions)", "diversity", "{:.4f}"))
    for title, key, fmt in measures:
        lines += [f"| {title} | model ({n}) | model ({b}) | z-search ({b}) | masked input |",
                  "| --- | --- | --- | --- | --- |"]
        for name, row in [*((fam, fams[fam]) for fam in FAMILIES), ("mean", mean)]:
            cells = [fmt.format(row[side][key]) for side in
                     ("model", "model_on_baseline_images", "baseline", "masked_input")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    ms = report["ms_per_completion"]
    lines += [
        "Hidden fraction: " + ", ".join(f"{fam} {fams[fam]['hidden_fraction']:.1%}"
                                        for fam in FAMILIES) + ".",
        "",
        f"Time per completed image: model {ms['model']:.3f} ms, z-search {ms['baseline']:.1f} "
        f"ms (torch on {report['torch_threads']} thread(s)).",
        "",
        *(f"![{fam}]({report['figures'][fam]})\n" for fam in FAMILIES),
        f"Wall time: {report['seconds']} s.",
        "",
    ]
    return "\n".join(lines)
