"""`python -m training export`: one-file ONNX models, parity with torch, the model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from training.__main__ import main
from training.config import TrainConfig
from training.export import ImageGenerator, export_model, nearest_preset, preset_name
from training.networks import build_networks
from training.onnx_models import cpu_session

from .conftest import TINY_MNIST


@pytest.fixture(scope="module")
def exported(tiny_mnist_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    return export_model(tiny_mnist_run, "tiny", models_dir=models, epoch=1,
                        run_evaluation=False)


def torch_pair(run: Path, epoch: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    config = TrainConfig.load(run / "config.json")
    g, d = build_networks(config)
    g.load_state_dict(torch.load(run / "snapshots" / f"generator-epoch-{epoch:04d}.pt"))
    d.load_state_dict(torch.load(run / "snapshots" / f"discriminator-epoch-{epoch:04d}.pt"))
    return ImageGenerator(g).eval(), d.eval()


def test_files_are_single_checked_onnx_models(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "discriminator.onnx", "generator.onnx", "model.json"]  # no .onnx.data sidecar
    for name in ("generator.onnx", "discriminator.onnx"):
        model = onnx.load(str(exported / name))
        onnx.checker.check_model(model, full_check=True)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in model.graph.initializer)


@pytest.mark.parametrize("n", [1, 7, 256])
def test_onnxruntime_matches_torch(exported: Path, tiny_mnist_run: Path, n: int) -> None:
    g, d = torch_pair(tiny_mnist_run, 1)
    rng = np.random.default_rng(n)
    z = rng.uniform(-np.sqrt(3), np.sqrt(3), (n, 100)).astype(np.float32)
    x = rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    images = cpu_session(exported / "generator.onnx").run(None, {"z": z})[0]
    logits = cpu_session(exported / "discriminator.onnx").run(None, {"x": x})[0]
    with torch.no_grad():
        expected_images = g(torch.from_numpy(z)).numpy()
        expected_logits = d(torch.from_numpy(x)).numpy()
    assert images.shape == (n, 1, 28, 28) and logits.shape == (n, 1)
    assert np.abs(images - expected_images).max() <= 1e-5
    assert np.abs(logits - expected_logits).max() <= 1e-5


def test_discriminator_is_exported_without_dropout(exported: Path) -> None:
    session = cpu_session(exported / "discriminator.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], session.run(None, {"x": x})[0])


def test_model_card_follows_the_design(exported: Path, tiny_mnist_run: Path) -> None:
    card = json.loads((exported / "model.json").read_text())
    assert card["name"] == "tiny"
    assert card["latent"] == {"dim": 100, "distribution": "uniform", "low": -np.sqrt(3),
                              "high": np.sqrt(3)}
    assert card["image"] == {"shape": [28, 28], "range": [0.0, 1.0]}
    for name, entry in card["files"].items():
        assert entry["sha256"] == hashlib.sha256((exported / name).read_bytes()).hexdigest()
    assert card["files"]["generator.onnx"]["input"] == "z"
    assert card["files"]["discriminator.onnx"]["outputs"] == ["logit"]
    assert card["training"]["config"] == json.loads(
        (tiny_mnist_run / "config.json").read_text())
    assert card["training"]["epochs"] == 1 and card["training"]["steps"] == 20
    assert card["training"]["device"] == "cpu"
    assert len(card["dataset"]["sha256"]) == 4
    assert max(card["export"]["parity_max_abs_error"].values()) <= 1e-5


def test_preset_name_ignores_how_a_run_was_executed() -> None:
    from training.config import preset, with_overrides

    assert preset_name(with_overrides(preset("mnist-paper"), {"epochs": 5, "threads": 1})) == \
        "mnist-paper"
    assert preset_name(with_overrides(preset("mnist-paper"), {"k": 2})) == "custom"
    assert preset_name(with_overrides(preset("mnist-paper"), TINY_MNIST)) == "custom"
    assert nearest_preset(with_overrides(preset("mnist-paper"), {"lr_drops": (5,), "seed": 3})) \
        == ("mnist-paper", {"lr_drops": (5,)})


def test_cli_export_with_evaluation(tiny_mnist_run: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import training.export as export_module

    real_evaluate = export_module.evaluate

    def small_evaluate(*args, **kwargs):  # the full 3 x 10,000 samples take a minute
        return real_evaluate(*args, **{**kwargs, "n_samples": 300, "seeds": (0,)})

    monkeypatch.setattr(export_module, "evaluate", small_evaluate)
    code = main(["export", str(tiny_mnist_run), "--name", "tiny", "--select", "--finalists",
                 "1", "--models-dir", str(tmp_path)])
    assert code == 0
    card = json.loads((tmp_path / "tiny" / "model.json").read_text())
    assert card["evaluation"]["parzen"]["n_samples"] == 300
    selection = card["export"]["selection"]
    assert set(selection["scores"]) == {"1", "2"}
    # one finalist: the cheap estimate's best, rescored at full size
    cheap_best = max(selection["scores"], key=selection["scores"].get)
    assert list(selection["finalists"]) == [cheap_best]
    assert card["version"].endswith(f"epoch{int(cheap_best)}")
    assert (tmp_path / "tiny" / "evaluation" / "figure2_samples_and_nearest.png").is_file()
    assert "Parzen LL" in capsys.readouterr().out


def test_export_refuses_a_missing_snapshot(tiny_mnist_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="epoch-0009"):
        export_model(tiny_mnist_run, "x", models_dir=tmp_path, epoch=9, run_evaluation=False)
    with pytest.raises(ValueError, match="model name"):
        export_model(tiny_mnist_run, "../evil", models_dir=tmp_path, run_evaluation=False)
