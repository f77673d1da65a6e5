"""`python -m training export RUN --name NAME`: G and D of a run as ONNX, with the model
card (`model.json`, DESIGN.md) the service reads, and the evaluation of the exported files.

generator.onnx:     z (N, dim) float32 -> x (N, 1, 28, 28) in [0, 1]
discriminator.onnx: x (N, 1, 28, 28)   -> logit (N, 1), dropout off
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.averaging import average_generator
from training.classifier import sha256_file
from training.config import PRESETS, TrainConfig
from training.data import MNIST_SHA256, TRAIN_STOP, load_mnist
from training.evaluate import evaluate, load_generator, select_snapshot, select_window
from training.networks import SQRT3, Generator, build_networks, sample_noise
from training.onnx_export import OPSET, export_onnx
from training.onnx_models import cpu_session
from training.train import CHECKPOINT, METRICS, iterations_per_epoch, load_checkpoint, snapshot_file

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
PARITY_TOLERANCE = 1e-5
# Fields that say how a run was executed, not what was trained.
RUN_ONLY_FIELDS = {"epochs", "seed", "device", "threads", "log_every", "snapshot_every"}


class ImageGenerator(nn.Module):
    """G with its output shaped as images, as the service expects."""

    def __init__(self, g: Generator) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(z).view(-1, 1, 28, 28)


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


def _epoch_record(run: Path, epoch: int) -> dict:
    """The metrics.jsonl line that closed `epoch` (steps, seconds, device)."""
    if (run / METRICS).is_file():
        for line in (run / METRICS).read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "epoch" and record["epoch"] == epoch:
                return record
    return {}


def load_pair(run: Path, epoch: int | None) -> tuple[TrainConfig, dict, dict, dict]:
    """(config, G state, D state, training facts) of the run's latest checkpoint, or of
    its snapshot at `epoch`."""
    config = TrainConfig.load(run / "config.json")
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
    record = _epoch_record(run, epoch)
    facts = {"epochs": epoch, "steps": record.get("step"), "seconds": record.get("seconds"),
             "device": record.get("device", "unknown")}
    g_state, d_state = (torch.load(f, map_location="cpu") for f in files)
    return config, g_state, d_state, facts


def load_average(run: Path, first: int, last: int) -> tuple[TrainConfig, dict, dict, dict]:
    """load_pair for G averaged over the snapshots of epochs [first, last], with the D of
    the last of them (see training/averaging.py for why D is not averaged)."""
    config = TrainConfig.load(run / "config.json")
    g_state, epochs = average_generator(run, first, last)
    d_state = torch.load(snapshot_file(run, "discriminator", epochs[-1]), map_location="cpu")
    record = _epoch_record(run, epochs[-1])
    facts = {"epochs": epochs[-1], "steps": record.get("step"), "seconds": record.get("seconds"),
             "device": record.get("device", "unknown"),
             "averaged_epochs": {"first": epochs[0], "last": epochs[-1], "count": len(epochs)}}
    return config, g_state, d_state, facts


def check_parity(g: nn.Module, d: nn.Module, folder: Path, config: TrainConfig,
                 batch_sizes: tuple[int, ...] = (1, 7, 256)) -> dict[str, float]:
    """Largest |onnxruntime - torch| over fresh random batches, for G's images and D's logit."""
    gen = torch.Generator().manual_seed(2024)
    g_sess, d_sess = (cpu_session(folder / f) for f in ("generator.onnx", "discriminator.onnx"))
    worst = {"generator": 0.0, "discriminator": 0.0}
    with torch.no_grad():
        for n in batch_sizes:
            z = sample_noise(n, config, generator=gen)
            x = torch.rand(n, 1, 28, 28, generator=gen)
            pairs = (("generator", g_sess, g(z), z), ("discriminator", d_sess, d(x), x))
            for name, session, expected, inp in pairs:
                got = session.run(None, {session.get_inputs()[0].name: inp.numpy()})[0]
                worst[name] = max(worst[name], float(np.abs(got - expected.numpy()).max()))
    return worst


def export_model(run: str | Path, name: str, models_dir: Path = MODELS_DIR,
                 epoch: int | None = None, select: bool = False, run_evaluation: bool = True,
                 data_dir: str | Path | None = None, evaluation_seeds: tuple[int, ...] = (0, 1, 2),
                 evaluation_samples: int = 10_000, finalists: int = 3,
                 average: list[tuple[int, int]] | None = None) -> Path:
    """Export the latest checkpoint, the snapshot of `epoch`, the snapshot chosen by
    validation Parzen (`select`), or G averaged over the window of `average` that
    `select_window` picks, with the window's last D."""
    run = Path(run)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise ValueError(f"model name {name!r}: use lower-case letters, digits, '.', '_', '-'")
    if sum((epoch is not None, select, bool(average))) > 1:
        raise ValueError("choose one of epoch, select and average")
    mnist = load_mnist(data_dir) if (select or average or run_evaluation) else None
    selection = None
    if average:
        selection = select_window(run, mnist, average, n_samples=evaluation_samples)
        config, g_state, d_state, facts = load_average(run, *selection.window)
    else:
        if select:
            selection = select_snapshot(run, mnist, with_discriminator=True,
                                        finalists=finalists)
            epoch = selection.epoch
        config, g_state, d_state, facts = load_pair(run, epoch)
    if not config.image_data:
        raise ValueError(f"{run} trained on {config.dataset}; only MNIST models are served")
    g, d = build_networks(config)
    g.load_state_dict(g_state)
    d.load_state_dict(d_state)
    g_img, d = ImageGenerator(g).eval(), d.eval()

    folder = models_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(g_img, sample_noise(2, config), folder / "generator.onnx", "z", ["x"])
    export_onnx(d, torch.zeros(2, 1, 28, 28), folder / "discriminator.onnx", "x", ["logit"])
    parity = check_parity(g_img, d, folder, config)
    if max(parity.values()) > PARITY_TOLERANCE:
        raise RuntimeError(f"onnxruntime differs from torch by {parity} (> {PARITY_TOLERANCE})")

    uniform = config.noise == "uniform"
    card = {
        "name": name,
        "version": (f"{run.name}-epoch{facts['epochs']}" if not average else
                    f"{run.name}-average{selection.window[0]}-{selection.window[1]}"),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "latent": {"dim": config.latent_dim, "distribution": config.noise,
                   "low": -SQRT3 if uniform else None, "high": SQRT3 if uniform else None},
        "image": {"shape": [28, 28], "range": [0.0, 1.0]},
        "files": {
            "generator.onnx": {"sha256": sha256_file(folder / "generator.onnx"), "input": "z",
                               "output": "x", "opset": OPSET},
            "discriminator.onnx": {"sha256": sha256_file(folder / "discriminator.onnx"),
                                   "input": "x", "outputs": ["logit"], "opset": OPSET},
        },
        "dataset": {"name": "mnist", "sha256": MNIST_SHA256},
        "training": {"preset": preset_name(config), "config": config.to_dict(),
                     "nearest_preset": dict(zip(("name", "changed"), nearest_preset(config),
                                                strict=True)), **facts,
                     "run": run.name, "torch": torch.__version__},
        "export": {"parity_max_abs_error": parity, "selection": (
            selection.to_card() if selection else
            {"by": "latest checkpoint" if epoch is None else f"snapshot of epoch {epoch}"})},
        "evaluation": {},
    }
    (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    if run_evaluation:
        report = evaluate(load_generator(folder), folder / "evaluation", mnist,
                          seeds=evaluation_seeds, n_samples=evaluation_samples,
                          metrics_file=run / METRICS,
                          validation_parzen=selection.cheap if select else None)
        p = report["parzen"]
        card["evaluation"] = {
            "parzen": {"ll": p["ll"], "se": p["se"], "sigma": p["sigma"],
                       "n_samples": p["n_samples"], "spread_over_seeds": p["spread_over_seeds"],
                       "seeds": p["seeds"], "ceiling": p["ceiling_real_train_images"]},
            "classifier_fd": report["classifier_fd"],
            "modes": report["modes"],
            "memorisation": report["memorisation"],
            "command": f"python -m training evaluate {folder}",
        }
        (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return folder
