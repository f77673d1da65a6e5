"""§7.3's inpainting model: in training G completes only the hidden pixels, D reads the
mask, the masks are drawn per example, and an interrupted run resumes exactly; exported, its
graphs keep the visible pixels and match torch, its card is the contract's, and its
evaluation, selection and figures work on a tiny run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.contract.card import read_card, verify_files
from service.contract.masks import FAMILIES, TRAIN_HIDDEN, training_masks
from training.__main__ import main
from training.config import TrainConfig, preset, with_overrides
from training.data.mnist import load_mnist
from training.evaluation.classifier import load_classifier
from training.evaluation.inpainting import (
    HIDDEN,
    SearchBaseline,
    completion,
    completion_agreement,
    evaluate_inpainting,
    family_masks,
    is_inpainting,
    load_completer,
    scores,
)
from training.gan.networks import build_networks, sample_noise
from training.gan.train import fixed_condition, make_batch, train
from training.inference.search import SearchBudget
from training.onnx_io import cpu_session
from training.release.export import export_model
from training.release.select import SELECTION_SEED, select_snapshot, select_window
from training.runs import CHECKPOINT, iterations_per_epoch, load_checkpoint

from ..conftest import REPO, TINY_MNIST


def tiny_inpainting(**overrides: object):
    values = dict(g_hidden=(32,), d_units=(16,), d_pieces=2, batch_size=20, epochs=2,
                  log_every=5, snapshot_every=0)
    values.update(overrides)
    return with_overrides(preset("mnist-inpaint"), values)


def test_g_completes_only_the_hidden_pixels_and_d_reads_the_mask() -> None:
    config = tiny_inpainting()
    assert (config.g_cond_dim, config.d_cond_dim) == (2 * 784, 784)
    g, d = build_networks(config)
    x = torch.rand(6, 784)
    batch = make_batch(config, x, None, np.random.default_rng(0))
    hidden = batch.hidden.bool()
    assert 0 < hidden.float().mean() < 1
    # G sees the visible pixels and the mask, never the hidden pixels' values
    torch.testing.assert_close(batch.g_cond[:, :784], x * ~hidden)
    torch.testing.assert_close(batch.g_cond[:, 784:], hidden.float())
    fake = batch.fake(g, sample_noise(6, config))
    assert torch.equal(fake[~hidden], x[~hidden])  # visible pixels kept exactly
    assert not torch.allclose(fake[hidden], x[hidden])
    assert d(fake, batch.d_cond).shape == (6, 1)
    changed = x.clone()
    changed[hidden] = 1 - changed[hidden]  # what was hidden cannot change G's input
    again = make_batch(config, changed, None, np.random.default_rng(0))
    torch.testing.assert_close(again.g_cond, batch.g_cond)


def test_the_epoch_grid_shows_each_family_on_one_image_a_row() -> None:
    config = tiny_inpainting()
    x = torch.rand(100, 784)
    fixed = fixed_condition(config, x)
    assert fixed.x.shape == (100, 784)
    assert torch.equal(fixed.x[:10], x[0].expand(10, 784))  # row 0: image 0, ten times
    assert torch.equal(fixed.hidden[0], fixed.hidden[9])
    assert not torch.equal(fixed.hidden[0], fixed.hidden[10])  # row 1: another family


def test_an_interrupted_inpainting_run_resumes_exactly(tmp_path: Path) -> None:
    config = tiny_inpainting()
    data = np.random.default_rng(0).random((200, 784), dtype=np.float32)
    whole = train(config, tmp_path / "whole", data=data, progress=False)
    stop_at = iterations_per_epoch(config, len(data)) + 3
    first = train(config, tmp_path / "split", data=data, max_steps=stop_at, progress=False)
    assert first.interrupted
    second = train(config, tmp_path / "split", data=data, resume=True, progress=False)
    assert second.step == whole.step
    a, b = (load_checkpoint(tmp_path / run / CHECKPOINT) for run in ("whole", "split"))
    for net in ("generator", "discriminator"):
        for key in a[net]:
            torch.testing.assert_close(a[net][key], b[net][key], rtol=0, atol=0)


# --- export, evaluation and figures of an inpainting model -------------------------------

@pytest.fixture(scope="module")
def tiny_inpainting_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch inpainting run on 2,000 MNIST images, with G and D snapshots of
    both epochs."""
    out = tmp_path_factory.mktemp("tiny-inpainting-run")
    config = with_overrides(preset("mnist-inpaint"), TINY_MNIST)
    train(config, out, data=load_mnist(mnist_dir).train.images[:2000], progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_inpainting_model(tiny_inpainting_run: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's epoch-2 G and D exported (no evaluation) as `inp`."""
    models = tmp_path_factory.mktemp("inpainting-models")
    return export_model(tiny_inpainting_run, "inp", models_dir=models, epoch=2,
                        run_evaluation=False)


@pytest.fixture
def quick_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped G's z-search with a budget of seconds, wherever the baseline is loaded."""
    import training.evaluation.inpainting as inpainting

    real = inpainting.load_search_baseline

    def quick() -> SearchBaseline:
        return dataclasses.replace(real(), budget=SearchBudget(candidates=64, steps=3))

    monkeypatch.setattr(inpainting, "load_search_baseline", quick)


def test_exported_card_declares_the_inpainting_inputs(tiny_inpainting_model: Path) -> None:
    card = read_card(tiny_inpainting_model)
    verify_files(tiny_inpainting_model, card)
    assert card.conditioning is None and "conditioning" not in card.raw
    assert card.raw["inpainting"] == {"visible_input": "visible", "mask_input": "mask",
                                      "families": list(FAMILIES),
                                      "train_hidden": list(TRAIN_HIDDEN)}
    assert max(card.raw["export"]["parity_max_abs_error"].values()) <= 1e-5
    for network in (card.generator, card.discriminator):
        session = cpu_session(tiny_inpainting_model / network.file)
        assert {i.name: tuple(i.shape[1:]) for i in session.get_inputs()} == network.inputs
        assert {o.name: tuple(o.shape[1:]) for o in session.get_outputs()} == network.outputs
    assert card.generator.inputs == {"z": (100,), "visible": (1, 28, 28), "mask": (28, 28)}
    assert card.discriminator.inputs == {"x": (1, 28, 28), "mask": (28, 28)}


@pytest.mark.parametrize("n", [1, 7, 256])
def test_exported_graphs_keep_the_visible_pixels_and_match_torch(
        tiny_inpainting_model: Path, tiny_inpainting_run: Path, n: int) -> None:
    config = TrainConfig.load(tiny_inpainting_run / "config.json")
    g, d = build_networks(config)
    g.load_state_dict(torch.load(tiny_inpainting_run / "snapshots" / "generator-epoch-0002.pt"))
    d.load_state_dict(torch.load(tiny_inpainting_run / "snapshots" /
                                 "discriminator-epoch-0002.pt"))
    rng = np.random.default_rng(n)
    z = rng.uniform(-np.sqrt(3), np.sqrt(3), (n, 100)).astype(np.float32)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    m = training_masks(n, rng, (28, 28)).astype(np.float32)
    g_sess, d_sess = (cpu_session(tiny_inpainting_model / f)
                      for f in ("generator.onnx", "discriminator.onnx"))
    out = g_sess.run(None, {"z": z, "visible": x, "mask": m})[0]
    hidden = np.broadcast_to(m[:, None].astype(bool), out.shape)
    np.testing.assert_array_equal(out[~hidden], x[~hidden])  # visible pixels kept exactly
    changed = np.where(hidden, 1 - x, x)  # the hidden pixels' values are ignored
    np.testing.assert_array_equal(g_sess.run(None, {"z": z, "visible": changed, "mask": m})[0],
                                  out)
    other = g_sess.run(None, {"z": -z, "visible": x, "mask": m})[0]
    assert np.abs(other - out)[hidden].max() > 1e-3  # z changes the completion
    with torch.no_grad():
        expected = completion(g.eval(), torch.from_numpy(z), torch.from_numpy(x.reshape(n, -1)),
                              torch.from_numpy(m.reshape(n, -1))).numpy()
        logits = d.eval()(torch.from_numpy(x), torch.from_numpy(m.reshape(n, -1))).numpy()
    assert np.abs(out.reshape(n, -1) - expected).max() <= 1e-5
    got = d_sess.run(None, {"x": x, "mask": m})[0]
    assert got.shape == (n, 1) and np.abs(got - logits).max() <= 1e-5
    np.testing.assert_array_equal(d_sess.run(None, {"x": x, "mask": m})[0], got)  # no dropout


def test_evaluation_masks_hide_half_of_the_pixels() -> None:
    for family in FAMILIES:
        m = family_masks(family, 400)
        assert m.shape == (400, 784) and set(np.unique(m)) == {0.0, 1.0}
        assert abs(m.mean() - HIDDEN) <= 0.015, family  # the centre square: 20 x 20 = 51%
        np.testing.assert_array_equal(family_masks(family, 10), m[:10])  # the same for any n
    assert (family_masks("half", 50).mean(axis=1) == 0.5).all()


def test_inpainting_evaluation_on_a_handful_of_test_digits(
        tiny_inpainting_model: Path, tiny_inpainting_run: Path, mnist_dir: Path,
        tmp_path: Path, quick_baseline: None) -> None:
    report = evaluate_inpainting(load_completer(tiny_inpainting_model), tmp_path,
                                 load_mnist(mnist_dir), n_images=12, k=3, baseline_images=5,
                                 run=tiny_inpainting_run, progress=False)
    assert json.loads((tmp_path / "inpainting.json").read_text()) == report
    assert "z-search" in (tmp_path / "inpainting.md").read_text()
    assert set(report["figures"]) == {*FAMILIES, "training_curves"}
    assert all((tmp_path / name).is_file() for name in report["figures"].values())
    assert "parzen" not in report and "classifier_fd" not in report  # measures of p(x)
    for family, row in report["families"].items():
        assert abs(row["hidden_fraction"] - HIDDEN) <= 0.02, family
        assert row["model"]["n_images"] == 12 and row["baseline"]["n_images"] == 5
        assert row["model"]["completions_per_image"] == row["baseline"]["completions_per_image"]
        for side in ("model", "model_on_baseline_images", "baseline", "masked_input"):
            values = [row[side][key] for key in ("label_agreement", "hidden_mse",
                                                 "hidden_mse_of_mean_completion", "diversity")]
            assert all(np.isfinite(values)) and 0 <= row[side]["label_agreement"] <= 1
        assert row["model"]["diversity"] > 0 and row["masked_input"]["diversity"] == 0
        # the mean of k completions is nearer the truth than they are (Jensen)
        assert row["model"]["hidden_mse_of_mean_completion"] <= row["model"]["hidden_mse"]
        assert all(v > 0 for v in row["ms_per_completion"].values())
    assert report["baseline"]["budget"]["candidates"] == 64


def test_scores_measure_agreement_error_and_spread() -> None:
    class Oracle:  # a classifier that calls an image bright or dark
        def run(self, names, feed):
            x = feed["x"].reshape(len(feed["x"]), -1)
            bright = x.mean(axis=1) > 0.5
            return [np.stack([~bright, bright], axis=1).astype(np.float32), x[:, :2]]

        def get_inputs(self):
            return [type("Input", (), {"name": "x"})]

    x = np.zeros((2, 784), np.float32)
    m = np.zeros((2, 784), np.float32)
    m[:, :392] = 1
    completions = np.stack([np.where(m > 0, 0.2, x), np.where(m > 0, 0.4, x)])  # (2, 2, 784)
    got = scores(completions, x, m, np.array([0, 0]), Oracle())
    assert got["label_agreement"] == 1.0
    assert got["hidden_mse"] == pytest.approx((0.04 + 0.16) / 2)
    assert got["hidden_mse_of_mean_completion"] == pytest.approx(0.09)
    assert got["diversity"] == pytest.approx(0.1)  # std of {0.2, 0.4}, ddof 0


def test_inpainting_runs_are_selected_by_validation_completion_agreement(
        tiny_inpainting_run: Path, mnist_dir: Path) -> None:
    mnist = load_mnist(mnist_dir)
    selection = select_snapshot(tiny_inpainting_run, mnist, progress=False, finalists=1,
                                n_samples=200)
    assert selection.criterion == "completion_agreement" and set(selection.cheap) == {1, 2}
    assert selection.epoch == max(selection.cheap, key=selection.cheap.get)  # higher is better
    classifier = load_classifier()
    source = load_completer(selection.best)
    assert selection.full[selection.epoch] == pytest.approx(completion_agreement(
        source, mnist.valid.images[:200], mnist.valid.labels[:200], classifier, SELECTION_SEED))
    assert "1000 validation images per mask family" in selection.to_card()["by"]
    window = select_window(tiny_inpainting_run, mnist, [(1, 2), (2, 2)], n_samples=200,
                           progress=False)
    assert set(window.scores) == {"1:2", "2:2"}
    assert all(set(s) == {"validation_completion_agreement"} for s in window.scores.values())
    assert "no memorisation check" in window.to_card()["by"]


def test_is_inpainting_knows_every_path_form(tiny_inpainting_run: Path,
                                             tiny_inpainting_model: Path) -> None:
    for path in (tiny_inpainting_run, tiny_inpainting_run / "checkpoint.pt",
                 tiny_inpainting_run / "snapshots" / "generator-epoch-0001.pt",
                 tiny_inpainting_model, tiny_inpainting_model / "generator.onnx"):
        assert is_inpainting(path), path
        assert load_completer(path).images(np.zeros((2, 100), np.float32),
                                           np.zeros((2, 784), np.float32),
                                           np.ones((2, 784), np.float32)).shape == (2, 784)
    assert not is_inpainting(REPO / "models" / "mnist-mlp")
    with pytest.raises(ValueError, match="'mnist-mlp' has no 'inpainting' section"):
        load_completer(REPO / "models" / "mnist-mlp")


def test_cli_export_evaluate_and_figures_of_an_inpainting_run(
        tiny_inpainting_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        quick_baseline: None) -> None:
    assert main(["export", str(tiny_inpainting_run), "--name", "inp", "--epoch", "2",
                 "--n-samples", "6", "--models-dir", str(tmp_path)]) == 0
    folder = tmp_path / "inp"
    evaluation = read_card(folder).raw["evaluation"]
    assert list(evaluation["families"]) == list(FAMILIES)
    assert evaluation["protocol"]["n_images"] == 6 and "parzen" not in evaluation
    assert sorted(p.name for p in (folder / "evaluation").iterdir()) == sorted(
        ["inpainting.json", "inpainting.md", "training_curves.png",
         *(f"inpainting_{family}.png" for family in FAMILIES)])
    assert "label agreement" in capsys.readouterr().out
    assert main(["evaluate", str(folder), "--out", str(tmp_path / "again"),
                 "--n-samples", "6"]) == 0
    again = json.loads((tmp_path / "again" / "inpainting.json").read_text())
    assert again["families"]["half"]["model"] == evaluation["families"]["half"]["model"]
    assert main(["figures", str(folder), "--out", str(tmp_path / "fig")]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(
        f"inpainting_{family}.png" for family in FAMILIES)
