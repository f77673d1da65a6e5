from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.__main__ import main
from training.config import TrainConfig
from training.data.mnist import MNIST, Split, load_mnist
from training.evaluation.generators import torch_source
from training.evaluation.memorisation import memorisation_check
from training.gan.networks import build_networks
from training.release.average import (
    average_generator,
    average_states,
    parse_windows,
    window_epochs,
)
from training.release.export import export_model
from training.release.select import select_window, validation_parzen


def test_average_is_the_element_wise_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen)}
              for _ in range(5)]
    mean = average_states(states)
    for key in ("w", "b"):
        expected = torch.stack([s[key] for s in states]).double().mean(0).float()
        assert torch.equal(mean[key], expected)
        assert mean[key].dtype == torch.float32
    assert torch.equal(average_states(states[:1])["w"], states[0]["w"])
    # order does not matter (float64 sums)
    assert all(torch.equal(mean[k], average_states(states[::-1])[k]) for k in mean)


def test_average_refuses_mismatched_or_no_states() -> None:
    with pytest.raises(ValueError, match="nothing to average"):
        average_states([])
    with pytest.raises(ValueError, match="keys"):
        average_states([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])
    with pytest.raises(ValueError, match="shape"):
        average_states([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])


def test_parse_windows() -> None:
    assert parse_windows("200:600, 300:600") == [(200, 600), (300, 600)]
    assert parse_windows("5:5") == [(5, 5)]
    for bad in ("200-600", "600:200", "a:b", ""):
        with pytest.raises(ValueError, match="window"):
            parse_windows(bad)


def test_window_takes_the_epochs_with_both_snapshots(tiny_mnist_run: Path) -> None:
    assert window_epochs(tiny_mnist_run, 0, 99) == [1, 2]
    assert window_epochs(tiny_mnist_run, 2, 2) == [2]
    with pytest.raises(FileNotFoundError, match="epochs 3-9"):
        window_epochs(tiny_mnist_run, 3, 9)
    g, epochs = average_generator(tiny_mnist_run, 1, 2)
    assert epochs == [1, 2]
    one, two = (torch.load(tiny_mnist_run / "snapshots" / f"generator-epoch-{e:04d}.pt")
                for e in epochs)
    for key in g:
        assert torch.allclose(g[key], (one[key] + two[key]) / 2, atol=1e-7)


def small_mnist(mnist_dir: Path) -> MNIST:
    """Enough of MNIST for the protocol's shapes; nearest neighbours over all of it would
    take most of a minute per call on two cores."""
    full = load_mnist(mnist_dir)
    return MNIST(*(Split(s.images[:n], s.labels[:n])
                   for s, n in ((full.train, 3000), (full.valid, 2000), (full.test, 1000))))


def test_select_window_scores_each_average_on_validation(tiny_mnist_run: Path,
                                                         mnist_dir: Path) -> None:
    mnist = small_mnist(mnist_dir)
    chosen = select_window(tiny_mnist_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                           progress=False, memorisation_limit=1.0)
    assert set(chosen.scores) == {"1:2", "2:2"}
    config = TrainConfig.load(tiny_mnist_run / "config.json")
    g, _ = average_generator(tiny_mnist_run, 1, 2)
    source = torch_source(g, config, "avg")
    again = validation_parzen(source, mnist, 300).ll
    assert chosen.scores["1:2"]["validation_parzen"] == pytest.approx(again)
    memo = memorisation_check(source.sample(300, 0), mnist.valid.images, mnist.train.images)
    assert chosen.scores["1:2"]["validation_memorisation"] == memo.closer_than_test_p1
    best = max(chosen.scores, key=lambda k: chosen.scores[k]["validation_parzen"])
    assert f"{chosen.window[0]}:{chosen.window[1]}" == best
    assert chosen.count == (2 if best == "1:2" else 1)


def test_select_window_passes_over_windows_that_look_memorised(
        tiny_mnist_run: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.release.select as select_module

    mnist = small_mnist(mnist_dir)
    free = select_window(tiny_mnist_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                         progress=False, memorisation_limit=1.0)
    best = max(free.scores, key=lambda k: free.scores[k]["validation_parzen"])
    other = ({"1:2", "2:2"} - {best}).pop()
    real_check = select_module.memorisation_from_distances
    fractions = iter([0.02 if key == best else 0.01 for key in ("1:2", "2:2")])

    def check(*args):  # the best Parzen window is flagged, the other is clean
        return replace(real_check(*args), closer_than_test_p1=next(fractions))

    monkeypatch.setattr(select_module, "memorisation_from_distances", check)
    chosen = select_window(tiny_mnist_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                           progress=False, memorisation_limit=0.015)
    assert f"{chosen.window[0]}:{chosen.window[1]}" == other
    fractions = iter([0.02, 0.02])
    with pytest.raises(ValueError, match="no window"):
        select_window(tiny_mnist_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                      progress=False, memorisation_limit=0.015)


def test_export_of_an_average_serves_averaged_g_and_the_last_d(tiny_mnist_run: Path,
                                                          tmp_path: Path) -> None:
    folder = export_model(tiny_mnist_run, "avg", models_dir=tmp_path, average=[(1, 2)],
                          run_evaluation=False, evaluation_samples=300)
    card = json.loads((folder / "model.json").read_text())
    assert card["version"].endswith("-average1-2")
    assert card["training"]["averaged_epochs"] == {"first": 1, "last": 2, "count": 2}
    assert card["training"]["epochs"] == 2
    assert card["export"]["selection"]["window"] == [1, 2]
    assert set(card["export"]["selection"]["windows"]) == {"1:2"}
    config = TrainConfig.load(tiny_mnist_run / "config.json")
    g_state, _ = average_generator(tiny_mnist_run, 1, 2)
    d_state = torch.load(tiny_mnist_run / "snapshots" / "discriminator-epoch-0002.pt")
    g, d = build_networks(config)
    g.load_state_dict(g_state)
    d.load_state_dict(d_state)
    z = np.random.default_rng(3).uniform(-1, 1, (7, config.latent_dim)).astype(np.float32)
    x = np.random.default_rng(4).uniform(0, 1, (7, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        g_expected = g(torch.from_numpy(z)).numpy().reshape(7, 1, 28, 28)
        d_expected = d.eval()(torch.from_numpy(x)).numpy()
    g_sess = ort.InferenceSession(str(folder / "generator.onnx"))
    d_sess = ort.InferenceSession(str(folder / "discriminator.onnx"))
    assert np.abs(g_sess.run(None, {"z": z})[0] - g_expected).max() <= 1e-5
    assert np.abs(d_sess.run(None, {"x": x})[0] - d_expected).max() <= 1e-5
    # a single snapshot's export is not the average
    export_model(tiny_mnist_run, "one", models_dir=tmp_path, epoch=2, run_evaluation=False)
    one = ort.InferenceSession(str(tmp_path / "one" / "generator.onnx"))
    assert np.abs(one.run(None, {"z": z})[0] - g_expected).max() > 1e-4


def test_export_takes_one_way_of_choosing_weights(tiny_mnist_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="one of"):
        export_model(tiny_mnist_run, "x", models_dir=tmp_path, epoch=2, average=[(1, 2)],
                     run_evaluation=False)
    assert main(["export", str(tiny_mnist_run), "--name", "x", "--average", "2:1",
                 "--no-evaluate", "--models-dir", str(tmp_path)]) == 2
    assert "FIRST (2) is after LAST (1)" in capsys.readouterr().err
