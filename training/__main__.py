"""Command line: `python -m training {train,evaluate,export,ablation,classifier,data,figure1} ...`
(see --help of each)."""

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
# lr_drops and lr_drop_factor may only change ahead of the checkpoint (train checks it).
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
    from training.train import train

    out = Path(args.out)
    overrides = overrides_from(args)
    if args.resume:
        frozen = set(overrides) - RESUMABLE_FIELDS
        if frozen:
            raise SystemExit(f"--resume keeps the run's config; only {sorted(RESUMABLE_FIELDS)} "
                             f"may change, not {sorted(frozen)}")
        config = with_overrides(TrainConfig.load(out / "config.json"), overrides)
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
    from training.data import DEFAULT_MIRROR, download_mnist

    for path in download_mnist(args.data_dir, args.base_url or DEFAULT_MIRROR):
        print(f"ok  {path}")
    return 0


def cmd_figure1(args: argparse.Namespace) -> int:
    from training.figure1 import make_figure1

    path = make_figure1(Path(args.out), seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from training.classifier import ClassifierConfig, train_classifier

    card = train_classifier(Path(args.out), ClassifierConfig(epochs=args.epochs, seed=args.seed),
                            data_dir=args.data_dir)
    print(f"test accuracy {card['accuracy']['test']:.4f}; wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.data import load_mnist
    from training.evaluate import evaluate, load_generator, select_snapshot

    path = Path(args.path)
    mnist = load_mnist(args.data_dir)
    validation_parzen = None
    if args.select:
        if not (path / "snapshots").is_dir():
            raise ValueError("--select needs a run folder with snapshots/")
        selection = select_snapshot(path, mnist, finalists=args.finalists,
                                    n_samples=args.n_samples)
        validation_parzen = selection.cheap
        print(f"selected {selection.best} (validation Parzen "
              f"{max(selection.full.values()):.1f}, full size)")
        source = load_generator(selection.best)
    else:
        source = load_generator(path)
    run = path if path.is_dir() else path.parent
    out = Path(args.out) if args.out else run / "evaluation"
    seeds = tuple(int(s) for s in args.seeds.split(","))
    report = evaluate(source, out, mnist, classifier_dir=Path(args.classifier), seeds=seeds,
                      n_samples=args.n_samples, metrics_file=run / "metrics.jsonl",
                      validation_parzen=validation_parzen)
    p = report["parzen"]
    print(f"Parzen LL {p['ll']:.1f} ± {p['se']:.1f} (σ {p['sigma']:.3f}; real-data ceiling "
          f"{p['ceiling_real_train_images']['ll']:.1f}) in {report['seconds']} s; "
          f"report in {out}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from training.data import TRAIN_STOP, load_mnist
    from training.evaluate import snapshot_scores
    from training.figures import validation_curves
    from training.train import iterations_per_epoch

    mnist = load_mnist(args.data_dir)
    curves, drops = {}, {}
    for run in map(Path, args.runs):
        config = TrainConfig.load(run / "config.json")
        per_epoch = iterations_per_epoch(config, TRAIN_STOP)
        curves[run.name] = {e: score for e, (_, score) in snapshot_scores(run, mnist).items()}
        drops[run.name] = [step / per_epoch for step in config.lr_drops]
        best = max(curves[run.name], key=curves[run.name].get)
        print(f"{run.name}: best epoch {best} ({curves[run.name][best]:.1f}); "
              + ", ".join(f"{e}: {v:.1f}" for e, v in sorted(curves[run.name].items())))
    out = Path(args.out)
    validation_curves(out, curves, drops)
    out.with_suffix(".json").write_text(json.dumps(
        {"cheap_validation_parzen": curves, "lr_drop_epochs": drops}, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from training.data import load_mnist
    from training.evaluate import load_generator, validation_parzen

    mnist = load_mnist(args.data_dir)
    for path in args.paths:
        r = validation_parzen(load_generator(path), mnist, args.n_samples, args.seed)
        print(f"{path}: validation Parzen LL {r.ll:.1f} ± {r.se:.1f} (σ {r.sigma:.3f}, "
              f"{r.n_samples} samples, {r.n_test} validation images)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.averaging import parse_windows
    from training.export import export_model

    folder = export_model(args.run, args.name, models_dir=Path(args.models_dir),
                          epoch=args.epoch, select=args.select, finalists=args.finalists,
                          average=parse_windows(args.average) if args.average else None,
                          run_evaluation=not args.no_evaluate, data_dir=args.data_dir)
    card = json.loads((folder / "model.json").read_text())
    parzen = card["evaluation"].get("parzen")
    summary = f"; Parzen LL {parzen['ll']:.1f} ± {parzen['se']:.1f}" if parzen else ""
    print(f"wrote {folder} ({card['version']}){summary}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from training.ablation import run_ablation

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

    p = sub.add_parser("evaluate", help="Parzen LL, classifier scores, memorisation, figures")
    p.add_argument("path", help="run folder, checkpoint, snapshot, generator.onnx or model folder")
    p.add_argument("--out", default=None, help="report folder (default: PATH's run/evaluation)")
    p.add_argument("--select", action="store_true",
                   help="pick the run's snapshot with the best validation Parzen first")
    add_finalists_flag(p)
    p.add_argument("--seeds", default="0,1,2", help="sample seeds for the Parzen estimate")
    p.add_argument("--n-samples", type=int, default=10_000)
    p.add_argument("--classifier", default=str(Path(__file__).resolve().parent.parent
                                               / "models" / "mnist-classifier"))
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write models/NAME: G and D as ONNX, card, evaluation")
    p.add_argument("run", help="run folder")
    p.add_argument("--name", required=True, help="model name, e.g. mnist-mlp")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--epoch", type=int, default=None, help="export this epoch's snapshot")
    which.add_argument("--select", action="store_true",
                       help="export the snapshot with the best validation Parzen")
    which.add_argument("--average", metavar="FIRST:LAST[,FIRST:LAST...]", default=None,
                       help="export G averaged over the snapshots of an epoch window (the one "
                       "of those given with the best validation Parzen among those that pass "
                       "the memorisation check on validation) with the window's last D")
    add_finalists_flag(p)
    p.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    p.add_argument("--no-evaluate", action="store_true", help="skip the evaluation")
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
    p.add_argument("--out", default="models/mnist-classifier")
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
