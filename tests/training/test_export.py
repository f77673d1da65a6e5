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
from training.gan.networks import build_networks
from training.onnx_io import cpu_session
from training.release.export import ImageGenerator, export_model, nearest_preset, preset_name

from ..conftest import TINY_MNIST


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
    import training.release.export as export_module

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


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_version_says_when_from_which_run_and_what(exported: Path,
                                                   tiny_mnist_run: Path) -> None:
    card = json.loads((exported / "model.json").read_text())
    assert card["version"] == f"{card['created'][:10]}-{tiny_mnist_run.name}-epoch1"


def test_export_refuses_an_existing_model_without_force(
        tiny_mnist_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    export_model(tiny_mnist_run, "m", models_dir=tmp_path, epoch=1, run_evaluation=False)
    before = tree_bytes(tmp_path / "m")
    with pytest.raises(FileExistsError, match="--force") as err:
        export_model(tiny_mnist_run, "m", models_dir=tmp_path, epoch=2, run_evaluation=False)
    assert str(tmp_path / "m") in str(err.value)
    assert main(["export", str(tiny_mnist_run), "--name", "m", "--epoch", "2", "--no-evaluate",
                 "--models-dir", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert tree_bytes(tmp_path / "m") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_force_replaces_the_whole_folder(tiny_mnist_run: Path, tmp_path: Path) -> None:
    export_model(tiny_mnist_run, "m", models_dir=tmp_path, epoch=1, run_evaluation=False)
    stale = tmp_path / "m" / "evaluation" / "report.json"
    stale.parent.mkdir()
    stale.write_text("{}")
    assert main(["export", str(tiny_mnist_run), "--name", "m", "--epoch", "2", "--no-evaluate",
                 "--force", "--models-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "discriminator.onnx", "generator.onnx", "model.json"]  # no stale evaluation/
    assert json.loads((tmp_path / "m" / "model.json").read_text())["training"]["epochs"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging folder left
    assert (tmp_path / "m").stat().st_mode & 0o755 == 0o755  # not mkdtemp's 0700


def test_a_failed_export_leaves_the_old_model_byte_identical(
        tiny_mnist_run: Path, mnist_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import training.release.export as export_module

    export_model(tiny_mnist_run, "m", models_dir=tmp_path, epoch=1, run_evaluation=False)
    (tmp_path / "m" / "evaluation").mkdir()
    (tmp_path / "m" / "evaluation" / "report.md").write_text("the old model's report\n")
    before = tree_bytes(tmp_path / "m")

    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)  # every export fails parity
    with pytest.raises(RuntimeError, match="onnxruntime differs"):
        export_model(tiny_mnist_run, "m", models_dir=tmp_path, epoch=2, run_evaluation=False,
                     force=True)
    assert tree_bytes(tmp_path / "m") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]

    monkeypatch.undo()

    def failing_evaluate(*args, **kwargs):  # after the ONNX files and the card are staged
        raise ValueError("evaluation failed")

    monkeypatch.setattr(export_module, "evaluate", failing_evaluate)
    with pytest.raises(ValueError, match="evaluation failed"):
        export_model(tiny_mnist_run, "m", models_dir=tmp_path, epoch=2, data_dir=mnist_dir,
                     force=True)
    assert tree_bytes(tmp_path / "m") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
