"""`python -m training export-encoder RUN MODEL`: put a trained encoder into the model folder
of the G it was trained for (docs/inference.md).

    encoder.onnx: x (N, 1, 28, 28) float32 in [0, 1] -> z (N, dim) float32

The encoder exported is the run's best on validation images. Export refuses it unless
onnxruntime matches torch within PARITY_TOLERANCE, then evaluates it once on test images
(training/evaluation/inference.py), draws its figures, and adds to the card the file and an
`inference` section. Everything else in the folder stays byte for byte as it was: the
folder is copied aside, completed there and swapped in whole, so a failed export leaves
the model as it was.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from service.contract.card import Latent, card_files, read_card, replacing, write_card
from training.data.mnist import IMAGE_SHAPE, TRAIN_STOP, load_mnist
from training.evaluation.classifier import load_classifier
from training.evaluation.inference import Encode, InferencePlan, evaluate_inference, render_markdown
from training.figures.inference import FIGURES, inference_figures
from training.inference.encoder import (
    ENCODER_FILE,
    Encoder,
    EncoderConfig,
    validation_scores,
)
from training.inference.search import FrozenGenerator, load_frozen_generator
from training.onnx_io import OPSET, cpu_session, export_onnx, run_batched
from training.release.export import PARITY_TOLERANCE, shown_path
from training.runs import CHECKPOINT, load_checkpoint

EVALUATION_FILES = ("inference.json", "inference.md")  # in the model's evaluation/


def load_best_encoder(run: Path, frozen: FrozenGenerator) -> tuple[Encoder, dict]:
    """The run's encoder with the lowest validation error, refused unless the run was
    trained for the G `frozen`; and the run's checkpoint."""
    state = load_checkpoint(run / CHECKPOINT)
    config = EncoderConfig.from_dict(state["config"])
    if state["best"] is None:
        raise ValueError(f"{run / CHECKPOINT}: no validated encoder yet (the first validation "
                         f"is at step {config.validate_every})")
    if frozen.sha256 != state["generator_sha256"]:
        raise ValueError(f"{run / CHECKPOINT} was trained for a generator.onnx with sha256 "
                         f"{state['generator_sha256']}, not {frozen.path}'s ({frozen.sha256})")
    encoder = Encoder(frozen.latent, config.hidden)
    encoder.load_state_dict(state["best"]["encoder"])
    return encoder.eval(), state


def encoder_parity(encoder: Encoder, path: Path, batch_sizes: tuple[int, ...] = (1, 7, 256)
                   ) -> float:
    """Largest |onnxruntime - torch| of z over fresh random images of each batch size."""
    session = cpu_session(path)
    gen = torch.Generator().manual_seed(2024)
    worst = 0.0
    with torch.no_grad():
        for n in batch_sizes:
            x = torch.rand(n, *IMAGE_SHAPE, generator=gen)
            got = session.run(None, {"x": x.numpy()})[0]
            worst = max(worst, float(np.abs(got - encoder(x).numpy()).max()))
    return worst


def onnx_encode(path: Path) -> Encode:
    """The exported encoder as the evaluation calls it: (n, 784) images -> (n, dim) z, on
    one onnxruntime thread (the time per image is then a one-core figure)."""
    session = cpu_session(path, threads=1)
    return lambda x: run_batched(session, np.asarray(x, np.float32).reshape(-1, *IMAGE_SHAPE))[0]


def export_encoder(run: str | Path, folder: str | Path, data_dir: str | Path | None = None,
                   plan: InferencePlan | None = None) -> dict:
    """Export the run's best encoder into the model `folder` and evaluate it there (on
    `plan`, default InferencePlan()); returns the card's new `inference` section."""
    plan = plan or InferencePlan()
    run, folder = Path(run), Path(folder)
    frozen = load_frozen_generator(folder)
    encoder, state = load_best_encoder(run, frozen)
    config = EncoderConfig.from_dict(state["config"])
    card = copy.deepcopy(read_card(folder).raw)
    mnist = load_mnist(data_dir)
    with replacing(folder, replace=True) as staged:
        shutil.copytree(folder, staged, dirs_exist_ok=True)  # every file, as it was
        path = export_onnx(encoder, torch.zeros(2, *IMAGE_SHAPE), staged / ENCODER_FILE,
                           "x", ["z"])
        parity = encoder_parity(encoder, path)
        if parity > PARITY_TOLERANCE:
            raise RuntimeError(f"{ENCODER_FILE}: onnxruntime differs from torch by {parity} "
                               f"(> {PARITY_TOLERANCE})")
        encode = onnx_encode(path)
        report = evaluate_inference(encode, frozen.g, frozen.latent, mnist.test,
                                    load_classifier(), plan)
        out = staged / "evaluation"
        out.mkdir(exist_ok=True)
        (out / EVALUATION_FILES[0]).write_text(json.dumps(report, indent=2) + "\n")
        (out / EVALUATION_FILES[1]).write_text(render_markdown(report))
        inference_figures(encode, frozen.g, frozen.latent, mnist.test, out, plan.budget)
        card["files"].update(card_files(staged, {"encoder": {"input": "x", "output": "z",
                                                             "opset": OPSET}}))
        files = [f"evaluation/{name}" for name in (*EVALUATION_FILES, *FIGURES.values())]
        card["inference"] = inference_section(run, folder, frozen.latent, config, state,
                                              parity, report, files)
        write_card(staged, card)
    return read_card(folder).raw["inference"]  # as written


def train_command(folder: Path, run: Path, config: EncoderConfig) -> str:
    """The `python -m training encoder` line that trains this config again."""
    defaults = EncoderConfig().to_dict()
    flags = [f"--{key.replace('_', '-')} "
             + (",".join(map(str, value)) if isinstance(value, tuple) else str(value))
             for key, value in config.to_dict().items()
             if key != "model" and value != defaults[key]]
    return " ".join(["python -m training encoder", shown_path(folder), "--out",
                     shown_path(run), *flags])


def inference_section(run: Path, folder: Path, latent: Latent, config: EncoderConfig,
                      state: dict, parity: float, report: dict, files: list[str]) -> dict:
    """The card's `inference`: what E is, how it was trained and chosen, what it scores,
    and the commands that make it again."""
    if latent.distribution == "uniform":
        centre, half = (latent.high + latent.low) / 2, (latent.high - latent.low) / 2
        output = f"a ({latent.dim}) -> z = " + (f"{centre:g} + " if centre else "") + \
            f"{half:.7g} tanh(a), inside [{latent.low:.7g}, {latent.high:.7g}]"
    else:
        output = f"z ({latent.dim}, linear)"
    best = state["best"]
    return {
        "section": "§7.2 learned approximate inference: E(x) ~ z, trained on pairs (G(z), z) "
                   "with z fresh from the prior every step and G frozen; loss: mean squared "
                   "error in z",
        "network": "x (N, 1, 28, 28) -> 784 -> "
                   + "".join(f"{width} ReLU -> " for width in config.hidden) + output,
        "config": config.to_dict(),
        "training": {"steps": state["step"], "seconds": round(state["seconds"], 1),
                     "device": state["device"], "threads": config.threads,
                     "torch": state["torch"], "run": run.name,
                     "generator_sha256": state["generator_sha256"]},
        "parity_max_abs_error": parity,
        "selection": {"by": "lowest mean squared pixel error of G(E(x)) against x on "
                            f"validation images {TRAIN_STOP:,}-"
                            f"{TRAIN_STOP + config.validation_images - 1:,}, every "
                            f"{config.validate_every} steps",
                      "step": best["step"], "valid_reconstruction_mse": best["valid_mse"],
                      "scores": {str(k): v for k, v in validation_scores(run).items()}},
        "evaluation": report,
        "files": [shown_path(folder / name) for name in files],
        "command": {"train": train_command(folder, run, config),
                    "export": f"python -m training export-encoder {shown_path(run)} "
                              f"{shown_path(folder)}"},
    }
