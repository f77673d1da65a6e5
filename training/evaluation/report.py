"""`python -m training evaluate PATH`: every measurement of a generator in one report
(report.json, report.md, the paper's Figures 2 and 3, training curves; for a conditional G
the label agreement, per-class FD and the class figures of docs/conditional.md instead of
Figure 3).

PATH is anything `load_generator` takes; a run folder with `--select` is first narrowed to
its best snapshot on validation images (validation Parzen; class-conditional FD for a
conditional G).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.contract.card import CARD_FILE, CardError, read_card
from service.contract.latent_paths import lerp, slerp
from training.data.mnist import MNIST
from training.evaluation.classes import class_coverage, inception_score, softmax
from training.evaluation.classifier import DEFAULT_DIR as CLASSIFIER_DIR
from training.evaluation.classifier import classify, load_classifier
from training.evaluation.conditional import class_scores
from training.evaluation.frechet import frechet_between, frechet_per_class
from training.evaluation.generators import GeneratorSource, load_generator
from training.evaluation.memorisation import memorisation_check, nearest_neighbours
from training.evaluation.parzen import parzen_protocol
from training.evaluation.precision_recall import K as PR_K
from training.evaluation.precision_recall import knn_radii, precision_recall
from training.figures.conditional import FIGURES, conditional_figures
from training.figures.curves import training_curves
from training.figures.paper import figure2, figure3
from training.paths import PAPER_MODEL
from training.release.select import Selection, select_snapshot
from training.runs import METRICS, SNAPSHOTS

# The served unconditional model: a conditional G's report puts its FD beside this one's.


def evaluate_path(path: Path, mnist: MNIST, out: Path | None = None, select: bool = False,
                  finalists: int = 3, classifier_dir: Path | None = None,
                  seeds: tuple[int, ...] = (0, 1, 2), n_samples: int = 10_000
                  ) -> tuple[dict, Path, Selection | None]:
    """The command: (the report, the folder it is in, the selection if `select`). The
    report goes to `out`, else to evaluation/ in PATH's run folder."""
    selection = None
    if select:
        if not (path / SNAPSHOTS).is_dir():
            raise ValueError(f"--select needs a run folder with {SNAPSHOTS}/")
        selection = select_snapshot(path, mnist, finalists=finalists, n_samples=n_samples)
    source = load_generator(selection.best if selection else path)
    run = path if path.is_dir() else path.parent
    out = out or run / "evaluation"
    report = evaluate(source, out, mnist, classifier_dir=classifier_dir or CLASSIFIER_DIR,
                      seeds=seeds, n_samples=n_samples, run=run, selection=selection)
    return report, out, selection


def evaluate(source: GeneratorSource, out_dir: Path, mnist: MNIST,
             classifier_dir: Path = CLASSIFIER_DIR, seeds: tuple[int, ...] = (0, 1, 2),
             n_samples: int = 10_000, n_memorisation: int = 2000, progress: bool = True,
             run: Path | None = None, selection: Selection | None = None) -> dict:
    """Run every measurement, write report.json, report.md and the PNGs into `out_dir`;
    the training curves too if `run` is the generator's run folder with metrics, with the
    validation scores of `selection` per snapshot if given.

    A conditional G's samples for Parzen, FD, precision/recall, mode coverage and
    memorisation take labels drawn from the training label prior (they measure the marginal
    p(x)); its label agreement and per-class FD take n_samples / classes samples of each
    class."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = len(seeds) + 5 + source.conditional
    bar = tqdm(total=stages, desc="evaluate", disable=not progress)

    def stage(name: str) -> None:
        bar.set_postfix_str(name)

    # Parzen: the protocol for each seed, and the real-data ceiling beside it
    runs = []
    samples = {}
    for seed in seeds:
        stage(f"parzen seed {seed}")
        samples[seed] = source.sample(n_samples, seed)
        r = parzen_protocol(samples[seed], mnist.valid.images[:1000], mnist.test.images)
        runs.append({"seed": seed, "ll": r.ll, "se": r.se, "sigma": r.sigma})
        bar.update()
    stage("parzen ceiling")
    ceiling = parzen_protocol(mnist.train.images[:n_samples], mnist.valid.images[:1000],
                              mnist.test.images)
    bar.update()
    lls = np.array([r["ll"] for r in runs])
    parzen = {
        "ll": float(lls.mean()),
        "se": float(np.mean([r["se"] for r in runs])),
        "spread_over_seeds": float(lls.std(ddof=1)) if len(lls) > 1 else 0.0,
        "sigma": runs[0]["sigma"],
        "n_samples": n_samples,
        "seeds": runs,
        "ceiling_real_train_images": {"ll": ceiling.ll, "se": ceiling.se,
                                      "sigma": ceiling.sigma},
    }

    # classifier scores on the first seed's samples
    stage("classifier")
    classifier = load_classifier(classifier_dir)
    first = samples[seeds[0]]
    s_logits, s_feats = classify(classifier, first)
    t_logits, t_feats = classify(classifier, mnist.test.images)
    v_logits, v_feats = classify(classifier, mnist.valid.images)
    degraded = {}
    for digit in range(10):
        keep = mnist.valid.labels != digit
        degraded[digit] = (frechet_between(v_logits[keep], t_logits),
                           frechet_between(v_feats[keep], t_feats))
    fd = {
        space: {
            "samples_vs_test": frechet_between(s, t),
            "floor_valid_vs_test": frechet_between(v, t),
            "one_digit_removed_vs_test_mean": float(np.mean([d[i] for d in degraded.values()])),
        }
        for i, (space, s, t, v) in enumerate((("logits", s_logits, t_logits, v_logits),
                                              ("features", s_feats, t_feats, v_feats)))
    }
    coverage = asdict(class_coverage(s_logits, mnist.test.labels))
    coverage["inception_score_test_images"] = inception_score(softmax(t_logits))
    bar.update()

    stage("precision and recall")
    t_radii = knn_radii(t_feats, PR_K)
    pr = precision_recall(t_feats, s_feats, PR_K, t_radii)
    pr_floor = precision_recall(t_feats, v_feats, PR_K, t_radii)
    precision_recall_report = {
        "precision": pr.precision, "recall": pr.recall, "k": pr.k,
        "n_samples": pr.n_generated, "n_test": pr.n_real, "space": "classifier features",
        "reference_valid_vs_test": {"precision": pr_floor.precision, "recall": pr_floor.recall},
    }
    bar.update()

    conditional = {}
    if source.conditional:
        stage("classes")
        n_per_class = max(2, n_samples // source.classes)
        scores = class_scores(source, classifier, t_feats, mnist.test.labels, n_per_class,
                              seeds[0])
        floor = frechet_per_class(v_feats, mnist.valid.labels, t_feats, mnist.test.labels,
                                  source.classes)
        conditional = {
            "label_agreement": {
                **scores.agreement, "n_per_class": n_per_class,
                "classifier_test_accuracy": float((t_logits.argmax(axis=1)
                                                   == mnist.test.labels).mean())},
            "class_fd": {"mean": scores.fd_mean, "per_class": scores.fd_per_class,
                         "floor_valid_vs_test_mean": float(np.mean(floor)),
                         "floor_valid_vs_test_per_class": floor, "n_per_class": n_per_class,
                         "space": "classifier features"},
            "unconditional_reference": unconditional_reference(),
        }
        bar.update()

    stage("memorisation")
    memo = memorisation_check(first[:n_memorisation], mnist.test.images[:n_memorisation],
                              mnist.train.images)
    bar.update()

    stage("figures")
    index, _ = nearest_neighbours(first[:30], mnist.train.images)
    figure2(out_dir / "figure2_samples_and_nearest.png", first[:30], mnist.train.images[index])
    if source.conditional:
        conditional_figures(source, out_dir, seed=12345)
    else:
        ends = source.latents(16, seed=12345)
        for method, path_fn in (("linear", lerp), ("slerp", slerp)):
            paths = np.stack([source.images(path_fn(ends[2 * r], ends[2 * r + 1], 10))
                              for r in range(8)])
            figure3(out_dir / f"figure3_interpolation_{method}.png", paths)
    criterion = selection.criterion if selection else ("class_fd" if source.conditional
                                                       else "parzen")
    by_epoch = selection.cheap if selection else None
    if run is not None and (run / METRICS).is_file():
        training_curves(out_dir / "training_curves.png", run, by_epoch,
                        VALIDATION_LABELS[criterion])
    bar.update()
    bar.close()

    report = {
        "generator": source.description,
        "classes": source.classes,
        "classifier_fd": fd,
        "precision_recall": precision_recall_report,
        **conditional,
        "parzen": parzen,
        "modes": coverage,
        "memorisation": asdict(memo),
        f"validation_{criterion}_by_epoch": by_epoch,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))
    return report


VALIDATION_LABELS = {"parzen": "validation Parzen LL (cheap setting)",
                     "class_fd": "validation class-conditional FD (cheap setting)"}


def unconditional_reference(folder: Path = PAPER_MODEL) -> dict | None:
    """What the served unconditional model's card says of its FD and Parzen (None without
    it): a conditional model's overall FD is read beside it."""
    if not (folder / CARD_FILE).is_file():
        return None
    try:
        card = read_card(folder).raw
        evaluation = card["evaluation"]
        return {"model": card["name"], "version": card.get("version"),
                "classifier_fd_features": evaluation["classifier_fd"]["features"][
                    "samples_vs_test"],
                "classifier_fd_logits": evaluation["classifier_fd"]["logits"]["samples_vs_test"],
                "parzen_ll": evaluation["parzen"]["ll"],
                "n_samples": evaluation["parzen"]["n_samples"]}
    except (CardError, KeyError, TypeError):
        return None


def render_markdown(report: dict) -> str:
    p, fd, pr, modes, memo = (report["parzen"], report["classifier_fd"],
                              report["precision_recall"], report["modes"],
                              report["memorisation"])
    c = p["ceiling_real_train_images"]
    ref = report.get("unconditional_reference")
    hist = " ".join(f"{i}:{h:.1%}" for i, h in enumerate(modes["histogram"]))
    conditional = bool(report.get("classes"))
    prior = " (labels from the training prior)" if conditional else ""
    lines = [
        f"# Evaluation of `{report['generator']}`",
        "",
        "| measure | generator | reference |",
        "| --- | --- | --- |",
    ]
    for space in ("features", "logits"):
        f = fd[space]
        beside = (f"; unconditional {ref['model']} ({ref['n_samples']} samples): "
                  f"{ref[f'classifier_fd_{space}']:.3f}" if ref else "")
        lines.append(f"| classifier FD ({space}){prior} | {f['samples_vs_test']:.3f} | floor "
                     f"(valid vs test) {f['floor_valid_vs_test']:.3f}; one digit removed "
                     f"{f['one_digit_removed_vs_test_mean']:.3f}{beside} |")
    r = pr["reference_valid_vs_test"]
    lines += [
        f"| precision (k = {pr['k']}, classifier features){prior} | {pr['precision']:.3f} | "
        f"valid vs test {r['precision']:.3f} |",
        f"| recall (k = {pr['k']}, classifier features){prior} | {pr['recall']:.3f} | "
        f"valid vs test {r['recall']:.3f} |",
    ]
    if conditional:
        a, cfd = report["label_agreement"], report["class_fd"]
        lines += [
            f"| label agreement ({a['n_per_class']} samples per class) | {a['overall']:.2%} | "
            f"classifier accuracy on test images {a['classifier_test_accuracy']:.2%} |",
            f"| class-conditional FD (mean over classes, features) | {cfd['mean']:.3f} | "
            f"floor (valid vs test, per class) {cfd['floor_valid_vs_test_mean']:.3f} |",
        ]
    lines += [
        f"| Parzen LL, test (nats), mean of {len(p['seeds'])} seeds{prior} | "
        f"{p['ll']:.1f} ± {p['se']:.1f} (spread {p['spread_over_seeds']:.2f}, "
        f"σ {p['sigma']:.3f}) | real train images: {c['ll']:.1f} ± {c['se']:.1f}; "
        "paper: 225 ± 2 |",
        f"| classes with ≥ 5% of samples | {modes['classes_at_5_percent']} / 10 | 10 |",
        f"| KL(predicted classes ‖ test labels) | {modes['kl_to_reference']:.4f} | 0 |",
        f"| classifier Inception score | {modes['inception_score']:.2f} | test images: "
        f"{modes['inception_score_test_images']:.2f} (max 10) |",
        f"| samples nearer their nearest train image than 99% of test images | "
        f"{memo['closer_than_test_p1']:.2%} | 1% ({'clean' if memo['clean'] else 'NOT clean'}) |",
        "",
        f"Predicted digits: {hist}",
        "",
    ]
    if conditional:
        a, cfd = report["label_agreement"], report["class_fd"]
        lines += [
            "| class | label agreement | FD (features) | floor FD (valid vs test) |",
            "| --- | --- | --- | --- |",
            *(f"| {k} | {'—' if agree is None else f'{agree:.2%}'} | {f:.3f} | {fl:.3f} |"
              for k, (agree, f, fl) in enumerate(zip(
                  a["per_class"], cfd["per_class"], cfd["floor_valid_vs_test_per_class"],
                  strict=True))),
            "",
        ]
    lines += [
        f"Nearest-train-image distance quantiles, samples: {_q(memo['sample_quantiles'])}; "
        f"test images: {_q(memo['test_quantiles'])}.",
        "",
        "![Figure 2](figure2_samples_and_nearest.png)",
        "",
    ]
    if conditional:
        lines += [
            f"![One row per class]({FIGURES['grid']})",
            "",
            f"![Latent interpolation, label fixed per row]({FIGURES['interpolation']})",
            "",
            f"![One z per row under every label]({FIGURES['fixed_z']})",
            "",
        ]
    else:
        lines += [
            "![Figure 3, linear](figure3_interpolation_linear.png)",
            "",
            "![Figure 3, slerp](figure3_interpolation_slerp.png)",
            "",
        ]
    lines += [f"Wall time: {report['seconds']} s.", ""]
    return "\n".join(lines)


def _q(quantiles: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in quantiles.items())
