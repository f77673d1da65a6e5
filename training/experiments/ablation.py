"""`python -m training ablation`: the paper's two design choices, same epoch budget each.

Rows: Algorithm 1 (alternating, k = 1) vs the released code's simultaneous update, each
with the non-saturating and the minimax G loss. Every row is trained from the same seed,
evaluated with the full protocol, and its curves drawn side by side (the minimax loss
saturates early: D(G(z)) collapses and G's gradient with it).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.config import preset, with_overrides  # noqa: E402
from training.data.mnist import load_mnist  # noqa: E402
from training.evaluation.generators import load_generator  # noqa: E402
from training.evaluation.report import evaluate  # noqa: E402
from training.gan.train import TrainingDiverged, train  # noqa: E402
from training.runs import CHECKPOINT, training_metrics  # noqa: E402

ROWS = {
    "alternating, non-saturating": {"update_scheme": "alternating", "g_loss": "non-saturating"},
    "alternating, minimax": {"update_scheme": "alternating", "g_loss": "minimax"},
    "simultaneous, non-saturating": {"update_scheme": "simultaneous", "g_loss": "non-saturating"},
    "simultaneous, minimax": {"update_scheme": "simultaneous", "g_loss": "minimax"},
}


def run_ablation(out: Path, epochs: int, data_dir: str | Path | None = None,
                 threads: int = 0, base: dict | None = None,
                 evaluation: dict | None = None) -> Path:
    """Train and evaluate each row into out/<row>; `base` overrides the mnist-paper preset
    and `evaluation` the arguments of `evaluate` (both for quick checks)."""
    mnist = load_mnist(data_dir)
    results = {}
    for label, overrides in ROWS.items():
        folder = out / label.replace(", ", "-")
        config = with_overrides(preset("mnist-paper"), {**(base or {}), **overrides,
                                                       "epochs": epochs, "threads": threads,
                                                       "snapshot_every": 0})
        if (folder / "diverged.json").exists():  # a rerun keeps the finding
            results[label] = {"folder": folder, **json.loads((folder / "diverged.json")
                                                             .read_text())}
            continue
        resume = (folder / CHECKPOINT).exists()
        try:
            result = train(config, folder, data=mnist.train.images, resume=resume)
        except TrainingDiverged as err:
            results[label] = {"seconds": None, "diverged_at": err.step, "message": str(err)}
            (folder / "diverged.json").write_text(json.dumps(results[label]) + "\n")
            results[label]["folder"] = folder
            continue
        report = evaluate(load_generator(folder), folder / "evaluation", mnist, run=folder,
                          **(evaluation or {}))
        results[label] = {"folder": folder, "seconds": result.seconds, "report": report}
    table = render_table(results, epochs)
    (out / "ablation.md").write_text(table)
    plot_curves(out / "ablation_curves.png", results)
    return out / "ablation.md"


def render_table(results: dict, epochs: int) -> str:
    lines = [f"| update, G loss ({epochs} epochs) | Parzen LL (test) | FD features | "
             "classes ≥ 5% | IS | final mean D(G(z)) | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in results.items():
        if "diverged_at" in r:
            lines.append(f"| {label} | diverged (non-finite loss) at iteration "
                         f"{r['diverged_at']} | – | – | – | – | – |")
            continue
        rep = r["report"]
        last = training_metrics(r["folder"])[-1]
        lines.append(
            f"| {label} | {rep['parzen']['ll']:.1f} ± {rep['parzen']['se']:.1f} | "
            f"{rep['classifier_fd']['features']['samples_vs_test']:.1f} | "
            f"{rep['modes']['classes_at_5_percent']} | {rep['modes']['inception_score']:.2f} | "
            f"{last['d_fake']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_curves(path: Path, results: dict) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100)
    for label, r in results.items():
        lines = training_metrics(r["folder"])
        steps = [m["step"] for m in lines]
        axes[0].plot(steps, [m["d_fake"] for m in lines], label=label)
        axes[1].plot(steps, [m["d_real"] for m in lines], label=label)
    axes[0].set_ylabel("mean D(G(z))")
    axes[1].set_ylabel("mean D(x)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
