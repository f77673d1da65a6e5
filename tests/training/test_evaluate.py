"""`python -m training evaluate` end to end on a tiny generator, from each kind of PATH."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.contract.card import Latent
from training.__main__ import main
from training.config import preset, with_overrides
from training.data.mnist import load_mnist
from training.evaluation.generators import GeneratorSource, load_generator
from training.evaluation.parzen import parzen_protocol
from training.evaluation.report import evaluate
from training.gan.networks import build_networks
from training.onnx_io import export_onnx
from training.release.select import cheap_validation_parzen, select_snapshot, validation_parzen

from ..conftest import TINY_MNIST


@pytest.fixture(scope="module")
def run(tiny_mnist_run: Path) -> Path:
    return tiny_mnist_run


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path):
    return load_mnist(mnist_dir)


def test_checkpoint_snapshot_and_onnx_give_the_same_images(run: Path, tmp_path: Path) -> None:
    from_checkpoint = load_generator(run)
    snapshot = load_generator(run / "snapshots" / "generator-epoch-0002.pt")
    config = with_overrides(preset("mnist-paper"), TINY_MNIST)
    g, _ = build_networks(config)
    g.load_state_dict(torch.load(run / "snapshots" / "generator-epoch-0002.pt"))
    onnx_path = export_onnx(g, torch.zeros(2, 100), tmp_path / "generator.onnx", "z", ["x"])
    from_onnx = load_generator(onnx_path)
    a = from_checkpoint.sample(64, seed=3)
    assert a.shape == (64, 784) and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, snapshot.sample(64, seed=3))
    np.testing.assert_allclose(from_onnx.sample(64, seed=3), a, atol=1e-5)
    # the seed contract: z = default_rng(seed).uniform(-sqrt 3, sqrt 3, (n, dim))
    z = np.random.default_rng(3).uniform(-np.sqrt(3), np.sqrt(3), (64, 100)).astype(np.float32)
    np.testing.assert_array_equal(from_checkpoint.latents(64, 3), z)


def test_unknown_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no generator"):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="neither model.json nor checkpoint.pt"):
        load_generator(tmp_path)


def test_evaluate_writes_the_report_and_figures(run: Path, mnist, tmp_path: Path) -> None:
    report = evaluate(load_generator(run), tmp_path, mnist, seeds=(0, 1), n_samples=500,
                      n_memorisation=200, progress=False, run=run)
    for name in ("report.json", "report.md", "figure2_samples_and_nearest.png",
                 "figure3_interpolation_linear.png", "figure3_interpolation_slerp.png",
                 "training_curves.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    p = report["parzen"]
    assert [s["seed"] for s in p["seeds"]] == [0, 1] and p["n_samples"] == 500
    # a 2-epoch toy generator sits far below real images under the same estimator
    assert p["ll"] < p["ceiling_real_train_images"]["ll"]
    fd = report["classifier_fd"]["features"]
    assert fd["floor_valid_vs_test"] < fd["one_digit_removed_vs_test_mean"] < fd["samples_vs_test"]
    assert 1.0 <= report["modes"]["inception_score"] <= 10.0
    assert report["modes"]["inception_score_test_images"] > 9.0
    pr = report["precision_recall"]
    assert pr["k"] == 3 and pr["n_samples"] == 500 and pr["n_test"] == 10_000
    # real images cover each other far better than a 2-epoch toy generator covers them
    assert pr["recall"] < pr["reference_valid_vs_test"]["recall"]
    assert pr["reference_valid_vs_test"]["precision"] > 0.8
    assert report["classes"] == 0 and "label_agreement" not in report
    assert list(report)[:3] == ["generator", "classes", "classifier_fd"]  # FD leads


def test_cli_select_picks_by_validation_only(run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    code = main(["evaluate", str(run), "--select", "--finalists", "1", "--seeds", "0",
                 "--n-samples", "300", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    by_epoch = report["validation_parzen_by_epoch"]
    assert set(by_epoch) == {"1", "2"}
    best = max(by_epoch, key=by_epoch.get)
    assert report["generator"].endswith(f"generator-epoch-{int(best):04d}.pt")
    assert "selected" in capsys.readouterr().out


def test_select_rescores_the_cheap_finalists_at_full_size(run: Path, mnist) -> None:
    selection = select_snapshot(run, mnist, progress=False, finalists=2, n_samples=500)
    assert set(selection.cheap) == set(selection.full) == {1, 2}
    for epoch, score in selection.full.items():
        snapshot = load_generator(run / "snapshots" / f"generator-epoch-{epoch:04d}.pt")
        assert score == pytest.approx(validation_parzen(snapshot, mnist, 500).ll)
    best = max(selection.full, key=selection.full.get)
    assert selection.best.name == f"generator-epoch-{best:04d}.pt"
    one = select_snapshot(run, mnist, progress=False, finalists=1, n_samples=500)
    assert list(one.full) == [max(one.cheap, key=one.cheap.get)]
    with pytest.raises(ValueError, match="finalists"):
        select_snapshot(run, mnist, progress=False, finalists=0)


def test_cli_curves_scores_every_snapshot_and_draws_them(run: Path, mnist, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "curves.png"
    assert main(["curves", str(run), "--out", str(out)]) == 0
    scores = json.loads(out.with_suffix(".json").read_text())
    curve = scores["cheap_validation_parzen"][run.name]
    assert set(curve) == {"1", "2"} and scores["lr_drop_epochs"][run.name] == []
    # the estimate that --select uses, so the figure shows what selection saw
    snapshot = run / "snapshots" / "generator-epoch-0002.pt"
    assert curve["2"] == pytest.approx(cheap_validation_parzen(load_generator(snapshot), mnist))
    assert out.stat().st_size > 1000 and "best epoch" in capsys.readouterr().out


def test_cli_validate_uses_validation_images_only(run: Path, mnist,
                                                  capsys: pytest.CaptureFixture) -> None:
    snapshot = run / "snapshots" / "generator-epoch-0002.pt"
    assert main(["validate", str(snapshot), "--n-samples", "500"]) == 0
    printed = capsys.readouterr().out
    samples = load_generator(snapshot).sample(500, 0)
    expected = parzen_protocol(samples, mnist.valid.images[:1000], mnist.valid.images[1000:])
    assert f"validation Parzen LL {expected.ll:.1f} ± {expected.se:.1f}" in printed
    assert "9000 validation images" in printed


def test_a_generator_with_non_finite_output_is_refused() -> None:
    source = GeneratorSource("broken", Latent(2, "uniform", -1.0, 1.0),
                             lambda z, c: np.full((len(z), 784), np.nan, np.float32))
    with pytest.raises(ValueError, match="broken produces non-finite images"):
        source.sample(4, seed=0)
