"""`python -m training export RUN --name NAME`: G and D of a run as ONNX, with the model
card (`model.json`, docs/model-card.md) the service reads, and the evaluation of the exported files.

generator.onnx:     z (N, dim) float32 [, c (N, K) float32 one-hot] -> x (N, *IMAGE_SHAPE) in [0, 1]
discriminator.onnx: x (N, *IMAGE_SHAPE) [, c (N, K)] -> logit (N, 1), dropout off

c is there for a conditional run (§7.1, `classes` K > 0, docs/conditional.md): the card then
declares it under `conditioning`. An inpainting run (§7.3, docs/inpainting.md) is exported as

generator.onnx:     z (N, dim), visible (N, *IMAGE_SHAPE), mask (N, H, W), 1 where hidden
                    -> x (N, *IMAGE_SHAPE) = mask * G + (1 - mask) * visible
discriminator.onnx: x (N, *IMAGE_SHAPE), mask (N, H, W) -> logit (N, 1), dropout off

with an `inpainting` section in the card, and evaluated by its completions of test digits
(training/evaluation/inpainting.py) instead of the measures of an unconditional p(x).

The folder is written beside models/NAME and swapped in whole once complete: an export
never leaves a half-written model, and replaces an existing one only with `force`.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.contract.card import (
    NETWORK_FILES,
    ImageSpec,
    card_files,
    check_model_name,
    replacing,
    write_card,
)
from service.contract.masks import FAMILIES, TRAIN_HIDDEN, training_masks
from training.config import PRESETS, TrainConfig
from training.data.mnist import IMAGE_SHAPE, MNIST_SHA256, TRAIN_STOP, load_mnist
from training.evaluation.generators import onnx_source
from training.evaluation.inpainting import completion, evaluate_inpainting, onnx_completer
from training.evaluation.report import evaluate
from training.gan.networks import (
    Discriminator,
    Generator,
    build_networks,
    latent_prior,
    one_hot,
    sample_noise,
)
from training.onnx_io import OPSET, cpu_session, export_onnx
from training.paths import MODELS_DIR
from training.release.average import average_generator
from training.release.select import select_snapshot, select_window
from training.runs import (
    CHECKPOINT,
    epoch_record,
    iterations_per_epoch,
    load_checkpoint,
    load_config,
    snapshot_file,
)

PARITY_TOLERANCE = 1e-5
# The name of the label input of a conditional model's graphs (the card's conditioning.input).
LABEL_INPUT = "c"
# An inpainting model's extra inputs (the card's inpainting.visible_input and mask_input).
VISIBLE_INPUT, MASK_INPUT = "visible", "mask"
# Fields that say how a run was executed, not what was trained.
RUN_ONLY_FIELDS = {"epochs", "seed", "device", "threads", "log_every", "snapshot_every"}


class ImageGenerator(nn.Module):
    """G with its output shaped as images, as the service expects (and the one-hot label c
    beside z for a conditional G)."""

    def __init__(self, g: Generator) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.g(z, c).view(-1, *IMAGE_SHAPE)


class InpaintingGenerator(nn.Module):
    """§7.3's G as served: z, the image (its hidden pixels ignored) and the mask (1 where
    hidden) -> the completed image, the visible pixels kept: mask * G + (1 - mask) * visible,
    composited inside the graph as in training."""

    def __init__(self, g: Generator) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, visible: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        return completion(self.g, z, visible.flatten(1), mask.flatten(1)).view(-1, *IMAGE_SHAPE)


class InpaintingDiscriminator(nn.Module):
    """§7.3's D as served: the image and its (N, H, W) mask -> the logit of D(x, mask)."""

    def __init__(self, d: Discriminator) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.d(x, mask.flatten(1))


def nearest_preset(config: TrainConfig) -> tuple[str, dict]:
    """The preset that differs from this config in the fewest trained fields (run-only
    fields aside), and those fields with this config's values."""
    mine = {k: v for k, v in config.to_dict().items() if k not in RUN_ONLY_FIELDS}
    changes = {name: {k: v for k, v in mine.items() if make().to_dict()[k] != v}
               for name, make in PRESETS.items()}
    name = min(changes, key=lambda n: len(changes[n]))
    return name, changes[name]


def preset_name(config: TrainConfig) -> str:
    """The preset this config is, up to run-only fields; "custom" otherwise."""
    name, changed = nearest_preset(config)
    return "custom" if changed else name


def load_pair(run: Path, epoch: int | None) -> tuple[TrainConfig, dict, dict, dict]:
    """(config, G state, D state, training facts) of the run's latest checkpoint, or of
    its snapshot at `epoch`."""
    config = load_config(run)
    if epoch is None:
        state = load_checkpoint(run / CHECKPOINT)
        per_epoch = iterations_per_epoch(config, TRAIN_STOP)
        facts = {"epochs": state["step"] // per_epoch, "steps": state["step"],
                 "seconds": round(state["seconds"], 1),
                 "device": state.get("device", "unknown")}
        return config, state["generator"], state["discriminator"], facts
    files = [snapshot_file(run, net, epoch) for net in ("generator", "discriminator")]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: export needs G and D of one epoch")
    record = epoch_record(run, epoch)
    facts = {"epochs": epoch, "steps": record.get("step"), "seconds": record.get("seconds"),
             "device": record.get("device", "unknown")}
    g_state, d_state = (torch.load(f, map_location="cpu") for f in files)
    return config, g_state, d_state, facts


def load_average(run: Path, first: int, last: int) -> tuple[TrainConfig, dict, dict, dict]:
    """load_pair for G averaged over the snapshots of epochs [first, last], with the D of
    the last of them (see training/release/average.py for why D is not averaged)."""
    config = load_config(run)
    g_state, epochs = average_generator(run, first, last)
    d_state = torch.load(snapshot_file(run, "discriminator", epochs[-1]), map_location="cpu")
    record = epoch_record(run, epochs[-1])
    facts = {"epochs": epochs[-1], "steps": record.get("step"), "seconds": record.get("seconds"),
             "device": record.get("device", "unknown"),
             "averaged_epochs": {"first": epochs[0], "last": epochs[-1], "count": len(epochs)}}
    return config, g_state, d_state, facts


def network_inputs(config: TrainConfig, n: int, gen: torch.Generator,
                   rng: np.random.Generator) -> tuple[dict[str, torch.Tensor],
                                                      dict[str, torch.Tensor]]:
    """Random inputs of G's and D's graphs, by name in the graphs' order: z and x, with the
    one-hot labels c of a conditional model, or an inpainting model's images and training's
    masks (every family, 25-75% hidden)."""
    z = sample_noise(n, config, generator=gen)
    x = torch.rand(n, *IMAGE_SHAPE, generator=gen)
    if config.classes:
        c = one_hot(torch.randint(config.classes, (n,), generator=gen), config.classes)
        return {"z": z, LABEL_INPUT: c}, {"x": x, LABEL_INPUT: c}
    if config.inpainting:
        visible = torch.rand(n, *IMAGE_SHAPE, generator=gen)
        mask = torch.from_numpy(training_masks(n, rng, IMAGE_SHAPE[1:]).astype(np.float32))
        return {"z": z, VISIBLE_INPUT: visible, MASK_INPUT: mask}, {"x": x, MASK_INPUT: mask}
    return {"z": z}, {"x": x}


def check_parity(g: nn.Module, d: nn.Module, folder: Path, config: TrainConfig,
                 batch_sizes: tuple[int, ...] = (1, 7, 256)) -> dict[str, float]:
    """Largest |onnxruntime - torch| over fresh random batches, for G's images and D's logit
    (on random labels, or random images and training's masks, too)."""
    gen, rng = torch.Generator().manual_seed(2024), np.random.default_rng(2024)
    sessions = {net: cpu_session(folder / NETWORK_FILES[net])
                for net in ("generator", "discriminator")}
    worst = {"generator": 0.0, "discriminator": 0.0}
    with torch.no_grad():
        for n in batch_sizes:
            g_in, d_in = network_inputs(config, n, gen, rng)
            for name, module, inputs in (("generator", g, g_in), ("discriminator", d, d_in)):
                expected = module(*inputs.values()).numpy()
                got = sessions[name].run(None, {k: v.numpy() for k, v in inputs.items()})[0]
                worst[name] = max(worst[name], float(np.abs(got - expected).max()))
    return worst


def export_model(run: str | Path, name: str, models_dir: Path = MODELS_DIR,
                 epoch: int | None = None, select: bool = False, run_evaluation: bool = True,
                 data_dir: str | Path | None = None, evaluation_seeds: tuple[int, ...] = (0, 1, 2),
                 evaluation_samples: int = 10_000, finalists: int = 3,
                 average: list[tuple[int, int]] | None = None, force: bool = False) -> Path:
    """Export the latest checkpoint, the snapshot of `epoch`, the snapshot chosen on
    validation images (`select`), or G averaged over the window of `average` that
    `select_window` picks, with the window's last D, into models_dir/name. An existing
    folder is refused, or with `force` replaced whole once the new one is complete. An
    inpainting run's evaluation takes `evaluation_samples` test images per mask family
    (and no seeds: its latents and masks are fixed, training/evaluation/inpainting.py)."""
    run = Path(run)
    check_model_name(name)
    if sum((epoch is not None, select, bool(average))) > 1:
        raise ValueError("choose one of epoch, select and average")
    target = models_dir / name
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists: pass --force to replace it whole (its ONNX "
                              "files, model.json and evaluation/)")
    mnist = load_mnist(data_dir) if (select or average or run_evaluation) else None
    selection = None
    if average:
        selection = select_window(run, mnist, average, n_samples=evaluation_samples)
        config, g_state, d_state, facts = load_average(run, *selection.window)
    else:
        if select:
            selection = select_snapshot(run, mnist, with_discriminator=True,
                                        finalists=finalists, n_samples=evaluation_samples)
            epoch = selection.epoch
        config, g_state, d_state, facts = load_pair(run, epoch)
    if not config.image_data:
        raise ValueError(f"{run} trained on {config.dataset}; only MNIST models are served")
    g, d = build_networks(config)
    g.load_state_dict(g_state)
    d.load_state_dict(d_state)
    if config.inpainting:
        g_img, d = InpaintingGenerator(g).eval(), InpaintingDiscriminator(d).eval()
    else:
        g_img, d = ImageGenerator(g).eval(), d.eval()

    with replacing(target, replace=force) as staged:
        parity = export_networks(g_img, d, staged, config)
        chosen = (f"average{selection.window[0]}-{selection.window[1]}" if average
                  else f"epoch{facts['epochs']}")
        card = model_card(name, run, chosen, config, facts, staged, parity, (
            selection.to_card() if selection else
            {"by": "latest checkpoint" if epoch is None else f"snapshot of epoch {epoch}"}))
        written = write_card(staged, card)
        if run_evaluation:
            # where it is measured from, as a reader of the card finds it
            generator = shown_path(target / written.generator.file)
            if config.inpainting:
                report = evaluate_inpainting(
                    onnx_completer(staged / written.generator.file, written,
                                   f"{generator} (onnxruntime, 1 thread)"),
                    staged / "evaluation", mnist, n_images=evaluation_samples, run=run,
                    validation_by_epoch=selection.cheap if select else None)
            else:
                source = onnx_source(staged / written.generator.file, written.latent,
                                     generator, written.conditioning)
                report = evaluate(source, staged / "evaluation", mnist,
                                  seeds=evaluation_seeds, n_samples=evaluation_samples,
                                  run=run, selection=selection if select else None)
            card["evaluation"] = evaluation_summary(report, shown_path(target))
            write_card(staged, card)
    return target


def export_networks(g_img: nn.Module, d: nn.Module, folder: Path,
                    config: TrainConfig) -> dict[str, float]:
    """Write generator.onnx and discriminator.onnx into `folder`; their parity with torch,
    refused above PARITY_TOLERANCE. A conditional pair takes c beside z and beside x; an
    inpainting pair the image and mask beside z, the mask beside x."""
    g_in, d_in = network_inputs(config, 2, torch.Generator().manual_seed(0),
                                np.random.default_rng(0))
    export_onnx(g_img, tuple(g_in.values()), folder / NETWORK_FILES["generator"], list(g_in),
                ["x"])
    export_onnx(d, tuple(d_in.values()), folder / NETWORK_FILES["discriminator"], list(d_in),
                ["logit"])
    parity = check_parity(g_img, d, folder, config)
    if max(parity.values()) > PARITY_TOLERANCE:
        raise RuntimeError(f"onnxruntime differs from torch by {parity} (> {PARITY_TOLERANCE})")
    return parity


def conditioning(config: TrainConfig) -> dict | None:
    """The card's `conditioning` of a conditional MNIST model: the digit, as one-hot c."""
    if not config.classes:
        return None
    return {"kind": "class", "input": LABEL_INPUT, "classes": config.classes,
            "names": [str(k) for k in range(config.classes)]}


def inpainting() -> dict:
    """The card's `inpainting` of an inpainting model: its graphs' extra inputs, the mask
    families it was trained on and the fractions hidden that training drew from."""
    return {"visible_input": VISIBLE_INPUT, "mask_input": MASK_INPUT,
            "families": list(FAMILIES), "train_hidden": list(TRAIN_HIDDEN)}


def model_card(name: str, run: Path, chosen: str, config: TrainConfig, facts: dict,
               folder: Path, parity: dict[str, float], selection: dict) -> dict:
    """The card of the networks in `folder` (docs/model-card.md), its evaluation still empty. The
    version says when, from which run and what was chosen: 2026-11-24-vlong-average795-895."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    card = {
        "name": name,
        "version": f"{created[:10]}-{run.name}-{chosen}",
        "created": created,
        "latent": latent_prior(config).to_card(),
        "image": ImageSpec.of(IMAGE_SHAPE).to_card(),
        "files": card_files(folder, {
            "generator": {"input": "z", "output": "x", "opset": OPSET},
            "discriminator": {"input": "x", "outputs": ["logit"], "opset": OPSET}}),
        "dataset": {"name": "mnist", "sha256": MNIST_SHA256},
        "training": {"preset": preset_name(config), "config": config.to_dict(),
                     "nearest_preset": dict(zip(("name", "changed"), nearest_preset(config),
                                                strict=True)), **facts,
                     "run": run.name, "torch": torch.__version__},
        "export": {"parity_max_abs_error": parity, "selection": selection},
        "evaluation": {},
    }
    if config.classes:  # an unconditional card stays as it was, without the key
        card["conditioning"] = conditioning(config)
    if config.inpainting:
        card["inpainting"] = inpainting()
    return card


def shown_path(path: Path) -> str:
    """`path` as a card shows it: relative to the repository when inside it, so that no
    machine's folder names end up in a committed card."""
    try:
        return str(path.resolve().relative_to(MODELS_DIR.parent))
    except ValueError:
        return str(path)


def evaluation_summary(report: dict, folder: Path | str) -> dict:
    """What the card keeps of the evaluation report of the model in `folder`: the
    classifier-based scores first (FD, precision, recall; for a conditional model label
    agreement and per-class FD), then the paper's Parzen estimate as the faithfulness check,
    mode coverage and memorisation. An inpainting model's: per mask family, the model's
    and the z-search baseline's label agreement, hidden-pixel error and diversity."""
    command = f"python -m training evaluate {folder}"
    if "families" in report:
        return {**{key: report[key] for key in (
            "mean_over_families", "families", "ms_per_completion", "protocol", "baseline",
            "classifier_test_accuracy")}, "command": command}
    p, pr = report["parzen"], report["precision_recall"]
    summary = {
        "classifier_fd": report["classifier_fd"],
        "precision_recall": {key: pr[key] for key in ("precision", "recall", "k", "n_samples",
                                                      "reference_valid_vs_test")},
    }
    if "label_agreement" in report:
        a, c = report["label_agreement"], report["class_fd"]
        summary["label_agreement"] = {key: a[key] for key in (
            "overall", "per_class", "n_per_class", "classifier_test_accuracy")}
        summary["class_fd"] = {key: c[key] for key in (
            "mean", "per_class", "floor_valid_vs_test_mean", "n_per_class")}
    summary.update({
        "parzen": {"ll": p["ll"], "se": p["se"], "sigma": p["sigma"],
                   "n_samples": p["n_samples"], "spread_over_seeds": p["spread_over_seeds"],
                   "seeds": p["seeds"], "ceiling": p["ceiling_real_train_images"]},
        "modes": report["modes"],
        "memorisation": report["memorisation"],
        "command": command,
    })
    return summary
