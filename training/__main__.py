"""Command line: `python -m training {train,data,figure1,evaluate,figures,export,validate,curves,
ablation,classifier,encoder,export-encoder} ...` (see --help of each). Each command parses its
flags and calls one function."""

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


def check_resumable(overrides: dict[str, Any], resumable: set[str]) -> None:
    """--resume keeps a run's config but for the fields that may change mid-run."""
    frozen = set(overrides) - set(resumable)
    if frozen:
        raise SystemExit(f"--resume keeps the run's config; only {sorted(resumable)} may "
                         f"change, not {sorted(frozen)}")


def cmd_train(args: argparse.Namespace) -> int:
    from training.gan.train import train
    from training.runs import load_config

    out = Path(args.out)
    overrides = overrides_from(args)
    if args.resume:
        check_resumable(overrides, RESUMABLE_FIELDS)
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
    from training.evaluation.inpainting import is_inpainting
    from training.evaluation.report import evaluate_path

    if is_inpainting(args.path):
        return evaluate_inpainting_path(args)
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


def evaluate_inpainting_path(args: argparse.Namespace) -> int:
    """`evaluate` of an inpainting model (§7.3): a model folder, a run (its checkpoint, or
    with --select its best snapshot on validation images), a checkpoint or a snapshot; the
    report goes to --out, else to evaluation/ in PATH's run folder."""
    from training.data.mnist import load_mnist
    from training.evaluation.classifier import DEFAULT_DIR
    from training.evaluation.inpainting import evaluate_inpainting, load_completer
    from training.release.select import select_snapshot
    from training.runs import METRICS

    path, mnist = Path(args.path), load_mnist(args.data_dir)
    selection = (select_snapshot(path, mnist, finalists=args.finalists,
                                 n_samples=args.n_samples) if args.select else None)
    run = path if path.is_dir() else path.parent
    out = Path(args.out) if args.out else run / "evaluation"
    report = evaluate_inpainting(
        load_completer(selection.best if selection else path), out, mnist,
        n_images=args.n_samples, classifier_dir=Path(args.classifier or DEFAULT_DIR),
        run=run if (run / METRICS).is_file() else None,
        validation_by_epoch=selection.cheap if selection else None)
    if selection:
        print(f"selected {selection.best} ({selection.criterion} on validation images "
              f"{selection.full[selection.epoch]:.4f}, full size)")
    print(f"{summary_line(report)} in {report['seconds']} s; report in {out}")
    return 0


def summary_line(report: dict) -> str:
    """The headline numbers of an evaluation report (FD, precision, recall, ..., Parzen; an
    inpainting model's label agreement, hidden-pixel error and diversity against z-search)."""
    if "families" in report:
        mean, b = report["mean_over_families"], report["protocol"]["baseline_images"]
        return "; ".join(
            f"{name} {mean['model'][key]:{fmt}} (z-search {mean['baseline'][key]:{fmt}} on "
            f"{b} images per family; model there {mean['model_on_baseline_images'][key]:{fmt}})"
            for name, key, fmt in (("label agreement", "label_agreement", ".2%"),
                                   ("hidden MSE", "hidden_mse", ".4f"),
                                   ("diversity", "diversity", ".4f")))
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
    from training.evaluation.inpainting import inpainting_figures, is_inpainting, load_completer
    from training.figures.conditional import conditional_figures

    if is_inpainting(args.path):
        from training.data.mnist import load_mnist

        for path in inpainting_figures(load_completer(args.path), Path(args.out),
                                       load_mnist(args.data_dir)).values():
            print(f"wrote {path}")
        return 0
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
    report = folder / "evaluation" / ("inpainting.json" if "inpainting" in card
                                      else "report.json")
    summary = f"; {summary_line(json.loads(report.read_text()))}" if report.is_file() else ""
    print(f"wrote {folder} ({card['version']}){summary}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from training.experiments.ablation import run_ablation

    table = run_ablation(Path(args.out), args.epochs, data_dir=args.data_dir,
                         threads=args.threads)
    print(table.read_text())
    return 0


def cmd_encoder(args: argparse.Namespace) -> int:
    from training.inference.encoder import RESUMABLE_FIELDS as ENCODER_RESUMABLE
    from training.inference.encoder import EncoderConfig, train_encoder
    from training.runs import CONFIG

    out = Path(args.out)
    overrides = overrides_from(args)
    if args.resume:
        check_resumable(overrides, ENCODER_RESUMABLE)
        config = EncoderConfig.load(out / CONFIG)
        if Path(config.model) != Path(args.model):
            raise SystemExit(f"{out} trains an encoder for {config.model}, not {args.model}")
        config = EncoderConfig.from_dict({**config.to_dict(), **overrides})
    else:
        config = EncoderConfig(model=args.model, **overrides)
    result = train_encoder(config, out, data_dir=args.data_dir, resume=args.resume,
                           max_steps=args.max_steps, progress=not args.no_progress)
    if result.interrupted:
        print(f"stopped at step {result.step}; checkpoint saved. Continue with: python -m "
              f"training encoder {args.model} --out {out} --resume", file=sys.stderr)
        return 130 if args.max_steps is None else 0
    print(f"done: {result.step} steps, {result.seconds:.0f} s; best validation reconstruction "
          f"MSE {result.best_valid_mse:.5f} at step {result.best_step}, in {out}. Export with: "
          f"python -m training export-encoder {out} {args.model}", file=sys.stderr)
    return 0


def cmd_export_encoder(args: argparse.Namespace) -> int:
    import torch

    from training.inference.export import export_encoder

    torch.set_num_threads(args.threads)
    section = export_encoder(args.run, args.model, data_dir=args.data_dir)
    report = section["evaluation"]
    methods = report["subset"]["methods"]
    print(f"wrote {args.model}/encoder.onnx (validation step {section['selection']['step']}, "
          f"parity {section['parity_max_abs_error']:.1e}); test pixel MSE of G(E(x)) "
          f"{report['test']['encoder']['pixel_mse']:.5f}, E + refine "
          f"{methods['encoder_refined']['pixel_mse']:.5f}, nearest "
          f"{methods['nearest']['pixel_mse']:.5f}, search "
          f"{methods['nearest_refined']['pixel_mse']:.5f}; report in "
          f"{args.model}/evaluation/inference.md")
    return 0


def add_encoder_config_flags(parser: argparse.ArgumentParser) -> None:
    from training.inference.encoder import EncoderConfig

    group = parser.add_argument_group("encoder config (default: EncoderConfig's value)")
    hints = typing.get_type_hints(EncoderConfig)
    for f in dataclasses.fields(EncoderConfig):
        if f.name == "model":  # the positional MODEL
            continue
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}",
                           type=_parse_field(hints[f.name]), default=None,
                           metavar=f.name.upper(), help=f"(default {default})")


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
                       "and per-class FD for a conditional G), Parzen LL, memorisation, figures; "
                       "for an inpainting G its completions of test digits against z-search")
    p.add_argument("path", help="run folder, checkpoint, snapshot, generator.onnx or model folder")
    p.add_argument("--out", default=None, help="report folder (default: PATH's run/evaluation)")
    p.add_argument("--select", action="store_true",
                   help="pick the run's snapshot with the best validation Parzen first (a "
                   "conditional run: the best validation class-conditional FD)")
    add_finalists_flag(p)
    p.add_argument("--seeds", default="0,1,2", help="sample seeds for the Parzen estimate")
    p.add_argument("--n-samples", type=int, default=10_000,
                   help="samples per seed (an inpainting G: test images per mask family)")
    p.add_argument("--classifier", default=None,
                   help="classifier folder (default: training/evaluation/mnist-classifier)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("figures", help="a conditional G's figures: one row per class, latent "
                       "interpolations with the label fixed, one z under every label; an "
                       "inpainting G's completions of test digits per mask family")
    p.add_argument("path", help="snapshot, checkpoint, run folder, generator.onnx or model "
                   "folder of a conditional or inpainting model")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (and nothing else; "
                   "an inpainting G's figures use the evaluation's fixed seeds)")
    p.add_argument("--data-dir", default=None, help="MNIST (an inpainting G's test digits)")
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

    p = sub.add_parser("encoder", help="§7.2: train an encoder E(x) ~ z for a model's G "
                       "(frozen) on (G(z), z) pairs into a run folder")
    p.add_argument("model", help="model folder whose generator.onnx E inverts, e.g. "
                   "models/mnist-mlp")
    p.add_argument("--out", required=True, help="run folder (checkpoint, metrics)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--data-dir", default=None)
    add_encoder_config_flags(p)
    p.set_defaults(func=cmd_encoder)

    p = sub.add_parser("export-encoder", help="§7.2: put a run's best encoder (by validation) "
                       "into its model folder as encoder.onnx, evaluate it on test images "
                       "against latent search, draw its figures, update the card")
    p.add_argument("run", help="encoder run folder")
    p.add_argument("model", help="the model folder it was trained for")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the report's times are one-core times)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_export_encoder)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
