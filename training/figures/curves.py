"""Curves of runs: a run's training curves from its metrics.jsonl, and the validation
Parzen of every snapshot of several runs with their lr drops (`python -m training curves`)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.data.mnist import MNIST, TRAIN_STOP  # noqa: E402
from training.release.select import snapshot_scores  # noqa: E402
from training.runs import (  # noqa: E402
    METRICS,
    iterations_per_epoch,
    load_config,
    training_metrics,
)


def training_curves(path: Path, run: Path, validation: dict[int, float] | None = None,
                    validation_label: str = "validation Parzen LL (cheap setting)") -> Path:
    """Losses, mean D(x) and D(G(z)) against iterations; a validation score per epoch (the
    one snapshots were selected by) if given."""
    steps = training_metrics(run)
    if not steps:
        raise ValueError(f"{run / METRICS} has no training metrics yet")
    x = np.array([m["step"] for m in steps])
    panels = 3 if validation else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), dpi=100)
    axes[0].plot(x, [m["d_loss"] for m in steps], label="D loss")
    axes[0].plot(x, [m["g_loss"] for m in steps], label="G loss")
    axes[0].set_xlabel("iteration")
    axes[0].legend()
    axes[1].plot(x, [m["d_real"] for m in steps], label="mean D(x)")
    axes[1].plot(x, [m["d_fake"] for m in steps], label="mean D(G(z))")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("iteration")
    axes[1].legend()
    if validation:
        epochs = sorted(validation)
        axes[2].plot(epochs, [validation[e] for e in epochs], "o-")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel(validation_label)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def validation_curves(path: Path, curves: dict[str, dict[int, float]],
                      drops: dict[str, list[float]]) -> Path:
    """Cheap validation Parzen per snapshot epoch, one line per run, with each run's lr
    drops (in epochs) as dotted lines of its colour."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    for label, scores in curves.items():
        epochs = sorted(scores)
        (line,) = ax.plot(epochs, [scores[e] for e in epochs], "o-", ms=3, label=label)
        for epoch in drops.get(label, []):
            ax.axvline(epoch, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("epoch (dotted: an lr drop)")
    ax.set_ylabel("validation Parzen LL, cheap setting (nats)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def snapshot_curves(runs: list[Path], mnist: MNIST, out: Path
                    ) -> tuple[dict[str, dict[int, float]], dict[str, list[float]]]:
    """Cheap validation Parzen of every snapshot of `runs` drawn into `out` (a PNG) and
    written beside it as .json, with each run's lr drops in epochs; (scores, drops) by run."""
    curves, drops = {}, {}
    for run in runs:
        config = load_config(run)
        per_epoch = iterations_per_epoch(config, TRAIN_STOP)
        curves[run.name] = {e: score for e, (_, score) in snapshot_scores(run, mnist).items()}
        drops[run.name] = [step / per_epoch for step in config.lr_drops]
    validation_curves(out, curves, drops)
    out.with_suffix(".json").write_text(json.dumps(
        {"cheap_validation_parzen": curves, "lr_drop_epochs": drops}, indent=1) + "\n")
    return curves, drops
