"""Command line: `python -m training {train,data,figure1,evaluate,figures,export,validate,curves,
ablation,classifier} ...` (see --help of each). Each command parses its flags and calls one
function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from training.config import PRESETS, TrainConfig, preset, with_overrides

# What may change when a run is resumed; anything else would make it a different run.
# lr_drops and lr_drop_factor may only change ahead of the checkpoint (runs.start_run checks).
RESUMABLE_FIELDS = {"epochs", "device", "threads", "log_every", "lr_drops", "lr_drop_factor"}


def _parse_field(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return lambda text: tuple(int(part) for part in text.split(",") if part)
    if origin is typing.Literal or kind is str:
        return str
    return kind


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("config overrides (default: the preset's value)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}",
                           type=_parse_field(kind), default=None, metavar=f.name.upper(),
                           help=f"(default {f.default})" if not isinstance(f.default, tuple)
                           else f"comma-separated (default {','.join(map(str, f.default))})")


def add_finalists_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--finalists", type=int, default=3, help="with --select: snapshots, "
                        "the best by cheap validation Parzen, rescored at full size (default 3)")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {key[4:]: value for key, value in vars(args).items()
            if key.startswith("cfg_") and value is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from training.gan.train import train
    from training.runs import load_config

    out = Path(args.out)
    overrides = overrides_from(args)
    if args.resume:
        frozen = set(overrides) - RESUMABLE_FIELDS
        if frozen:
            raise SystemExit(f"--resume keeps the run's config; only {sorted(RESUMABLE_FIELDS)} "
                             f"may change, not {sorted(frozen)}")
        config = with_overrides(load_config(out), overrides)
    else:
        config = with_overrides(preset(args.preset), overrides)
    result = train(config, out, data_dir=args.data_dir, resume=args.resume,
                   max_steps=args.max_steps, progress=not args.no_progress)
    if result.interrupted:
        print(f"stopped at step {result.step}; checkpoint saved. Continue with: "
              f"python -m training train --out {out} --resume", file=sys.stderr)
        return 130 if args.max_steps is None else 0
    print(f"done: {result.epoch} epochs, {result.step} iterations, {result.seconds:.0f} s, "
          f"in {out}", file=sys.stderr)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from training.data.mnist import DEFAULT_MIRROR, download_mnist

    for path in download_mnist(args.data_dir, args.base_url or DEFAULT_MIRROR):
        print(f"ok  {path}")
    return 0


def cmd_figure1(args: argparse.Namespace) -> int:
    from training.experiments.figure1 import make_figure1

    path = make_figure1(Path(args.out), seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from training.evaluation.classifier import ClassifierConfig, train_classifier

    card = train_classifier(Path(args.out), ClassifierConfig(epochs=args.epochs, seed=args.seed),
                            data_dir=args.data_dir)
    print(f"test accuracy {card['accuracy']['test']:.4f}; wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.data.mnist import load_mnist
    from training.evaluation.report import evaluate_path

    report, out, selection = evaluate_path(
        Path(args.path), load_mnist(args.data_dir), out=Path(args.out) if args.out else None,
        select=args.select, finalists=args.finalists,
        classifier_dir=Path(args.classifier) if args.classifier else None,
        seeds=tuple(int(s) for s in args.seeds.split(",")), n_samples=args.n_samples)
    if selection:
        print(f"selected {selection.best} ({selection.criterion} on validation images "
              f"{selection.full[selection.epoch]:.3f}, full size)")
    print(f"{summary_line(report)} in {report['seconds']} s; report in {out}")
    return 0


def summary_line(report: dict) -> str:
    """The headline numbers of an evaluation report (FD, precision, recall, ..., Parzen)."""
    fd, pr, p = report["classifier_fd"]["features"], report["precision_recall"], report["parzen"]
    parts = [f"FD {fd['samples_vs_test']:.2f} (floor {fd['floor_valid_vs_test']:.2f})",
             f"precision {pr['precision']:.3f}, recall {pr['recall']:.3f}"]
    if "label_agreement" in report:
        parts += [f"label agreement {report['label_agreement']['overall']:.2%}",
                  f"class-conditional FD {report['class_fd']['mean']:.2f}"]
    parts.append(f"Parzen LL {p['ll']:.1f} ± {p['se']:.1f} (σ {p['sigma']:.3f}; real-data "
                 f"ceiling {p['ceiling_real_train_images']['ll']:.1f})")
    return "; ".join(parts)


def cmd_figures(args: argparse.Namespace) -> int:
    from training.evaluation.generators import load_generator
    from training.figures.conditional import conditional_figures

    source = load_generator(args.path)
    for path in conditional_figures(source, Path(args.out), seed=args.seed).values():
        print(f"wrote {path}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from training.data.mnist import load_mnist
    from training.figures.curves import snapshot_curves

    out = Path(args.out)
    curves, _ = snapshot_curves([Path(run) for run in args.runs], load_mnist(args.data_dir), out)
    for name, scores in curves.items():
        best = max(scores, key=scores.get)
        print(f"{name}: best epoch {best} ({scores[best]:.1f}); "
              + ", ".join(f"{e}: {v:.1f}" for e, v in sorted(scores.items())))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from training.data.mnist import load_mnist
    from training.evaluation.generators import load_generator
    from training.release.select import validation_parzen

    mnist = load_mnist(args.data_dir)
    for path in args.paths:
        r = validation_parzen(load_generator(path), mnist, args.n_samples, args.seed)
        print(f"{path}: validation Parzen LL {r.ll:.1f} ± {r.se:.1f} (σ {r.sigma:.3f}, "
              f"{r.n_samples} samples, {r.n_test} validation images)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from service.contract.card import read_card
    from training.release.average import parse_windows
    from training.release.export import MODELS_DIR, export_model

    folder = export_model(args.run, args.name,
                          models_dir=Path(args.models_dir) if args.models_dir else MODELS_DIR,
                          epoch=args.epoch, select=args.select, finalists=args.finalists,
                          average=parse_windows(args.average) if args.average else None,
                          run_evaluation=not args.no_evaluate, data_dir=args.data_dir,
                          evaluation_seeds=tuple(int(s) for s in args.seeds.split(",")),
                          evaluation_samples=args.n_samples, force=args.force)
    card = read_card(folder).raw
    report = folder / "evaluation" / "report.json"
    summary = f"; {summary_line(json.loads(report.read_text()))}" if report.is_file() else ""
    print(f"wrote {folder} ({card['version']}){summary}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from training.experiments.ablation import run_ablation

    table = run_ablation(Path(args.out), args.epochs, data_dir=args.data_dir,
                         threads=args.threads)
    print(table.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a GAN (Algorithm 1) into a run folder")
    p.add_argument("--preset", choices=sorted(PRESETS), default="mnist-paper")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics, samples)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--data-dir", default=None,
                   help="MNIST IDX folder (default: $COUNTERFEIT_DATA_DIR, ../shared/data/mnist)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop (with a checkpoint) after this many iterations in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="download the four MNIST files and check their sha256")
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--base-url", default=None, help="mirror to download from")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("figure1", help="reproduce the paper's Figure 1 on the 1-D toy")
    p.add_argument("--out", default="docs/figures/figure1.png")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_figure1)

    p = sub.add_parser("evaluate", help="classifier FD, precision and recall (label agreement "
                       "and per-class FD for a conditional G), Parzen LL, memorisation, figures")
    p.add_argument("path", help="run folder, checkpoint, snapshot, generator.onnx or model folder")
    p.add_argument("--out", default=None, help="report folder (default: PATH's run/evaluation)")
    p.add_argument("--select", action="store_true",
                   help="pick the run's snapshot with the best validation Parzen first (a "
                   "conditional run: the best validation class-conditional FD)")
    add_finalists_flag(p)
    p.add_argument("--seeds", default="0,1,2", help="sample seeds for the Parzen estimate")
    p.add_argument("--n-samples", type=int, default=10_000)
    p.add_argument("--classifier", default=None,
                   help="classifier folder (default: training/evaluation/mnist-classifier)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("figures", help="a conditional G's figures: one row per class, latent "
                       "interpolations with the label fixed, one z under every label")
    p.add_argument("path", help="snapshot, checkpoint, run folder, generator.onnx or model "
                   "folder of a conditional model")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (and nothing else)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("export", help="write models/NAME: G and D as ONNX, card, evaluation")
    p.add_argument("run", help="run folder")
    p.add_argument("--name", required=True, help="model name, e.g. mnist-mlp")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--epoch", type=int, default=None, help="export this epoch's snapshot")
    which.add_argument("--select", action="store_true",
                       help="export the snapshot with the best validation Parzen (a "
                       "conditional model: the best validation class-conditional FD)")
    which.add_argument("--average", metavar="FIRST:LAST[,FIRST:LAST...]", default=None,
                       help="export G averaged over the snapshots of an epoch window (the one "
                       "of those given with the best validation Parzen, or class-conditional "
                       "FD for a conditional model, among those that pass the memorisation "
                       "check on validation) with the window's last D")
    add_finalists_flag(p)
    p.add_argument("--models-dir", default=None, help="(default: the repository's models/)")
    p.add_argument("--force", action="store_true",
                   help="replace models/NAME if it exists (the whole folder, once the new one "
                   "is written)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the evaluation")
    p.add_argument("--seeds", default="0,1,2", help="sample seeds of the evaluation's Parzen "
                   "estimate (the first seed's samples feed every other measure)")
    p.add_argument("--n-samples", type=int, default=10_000,
                   help="samples per seed for the evaluation (and for --select's and "
                   "--average's full-size validation scores); smaller only to try things out")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", help="full-size Parzen on validation images only "
                       "(compare runs without touching the test set)")
    p.add_argument("paths", nargs="+", help="snapshots, checkpoints, .onnx or model folders")
    p.add_argument("--n-samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("curves", help="validation Parzen per snapshot of runs, in one figure")
    p.add_argument("runs", nargs="+", help="run folders with snapshots/")
    p.add_argument("--out", default="docs/figures/validation_curves.png",
                   help="PNG; the scores go beside it as .json")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("ablation", help="update scheme x G loss, same epochs, evaluated")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("classifier", help="train and export the evaluation's MNIST classifier")
    p.add_argument("--out", default="training/evaluation/mnist-classifier")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_classifier)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
