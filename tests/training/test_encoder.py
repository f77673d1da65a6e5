"""§7.2's encoder E(x) ~ z for a shipped G: its loss, its output's range, a training run that
resumes exactly, the export into a model folder the service accepts, and the evaluation
against latent search (training/inference/, docs/inference.md)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from service.contract.card import CARD_FILE, Latent, read_card, sha256_file, write_card
from training.__main__ import main
from training.data.mnist import MNIST, load_mnist
from training.evaluation.classifier import load_classifier
from training.evaluation.inference import InferencePlan, evaluate_inference, generate
from training.inference import encoder as encoder_module
from training.inference import export as export_module
from training.inference.encoder import (
    Encoder,
    EncoderConfig,
    latent_mse,
    train_encoder,
)
from training.inference.export import encoder_parity, export_encoder, load_best_encoder
from training.inference.search import SearchBudget, load_frozen_generator
from training.runs import CHECKPOINT, CONFIG, load_checkpoint, read_metrics

from ..conftest import REPO

SHIPPED = REPO / "models" / "mnist-mlp"
UNIFORM = Latent(100, "uniform", -3**0.5, 3**0.5)
# a small E, a few steps of batch 20, validated every 2 steps on 50 validation images
TINY = {"hidden": (32,), "steps": 6, "batch_size": 20, "validate_every": 2,
        "validation_images": 50, "log_every": 1, "threads": 1}
# a few images and a small search budget: seconds
SMALL_PLAN = InferencePlan(test_images=40, baseline_images=8, prior_samples=40,
                           budget=SearchBudget(candidates=500, steps=20))


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> MNIST:
    return load_mnist(mnist_dir)


@pytest.fixture(scope="module")
def tiny_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six steps of a small E for the shipped G, trained through the command line."""
    out = tmp_path_factory.mktemp("encoder-run")
    flags = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
             for k, v in TINY.items()]
    assert main(["encoder", str(SHIPPED), "--out", str(out), "--data-dir", str(mnist_dir),
                 "--no-progress", *flags]) == 0
    return out


def shipped_copy_without_encoder(parent: Path) -> Path:
    """models/mnist-mlp copied into `parent`, as it was before any encoder was exported."""
    folder = parent / SHIPPED.name
    shutil.copytree(SHIPPED, folder)
    card = json.loads((folder / CARD_FILE).read_text())
    card.pop("inference", None)
    card["files"].pop("encoder.onnx", None)
    (folder / "encoder.onnx").unlink(missing_ok=True)
    write_card(folder, card)
    return folder


def test_latent_mse_is_the_mean_over_images_and_coordinates_of_the_squared_error() -> None:
    assert latent_mse(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)).item() == 2.5
    gen = torch.Generator().manual_seed(0)
    z_hat, z = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    by_formula = sum(float(z_hat[i, j] - z[i, j]) ** 2 for i in range(7) for j in range(5)) / 35
    assert latent_mse(z_hat, z).item() == pytest.approx(by_formula, rel=1e-6)


def test_encoder_output_stays_inside_the_uniform_prior_even_when_pushed_hard() -> None:
    torch.manual_seed(0)
    encoder = Encoder(UNIFORM, (16,))
    with torch.no_grad():
        encoder.out.weight.mul_(1000.0)  # pre-activations far beyond tanh's linear range
        z = encoder(torch.rand(64, 1, 28, 28) * 50)
    assert z.shape == (64, 100)
    assert z.min() >= UNIFORM.low and z.max() <= UNIFORM.high
    assert z.abs().max() > 0.99 * UNIFORM.high  # it is pushed to the edges, not left at 0
    unbounded = Encoder(Latent(100, "normal"), (16,))
    with torch.no_grad():
        unbounded.out.weight.mul_(1000.0)
        assert unbounded(torch.rand(64, 784) * 50).abs().max() > 10  # a normal prior: linear


def test_training_writes_its_run_folder_and_resumes_exactly(
        tiny_run: Path, mnist: MNIST, tmp_path: Path) -> None:
    config = EncoderConfig.load(tiny_run / CONFIG)
    assert config == EncoderConfig(model=str(SHIPPED), **TINY)
    uninterrupted = load_checkpoint(tiny_run / CHECKPOINT)
    assert uninterrupted["step"] == 6
    assert uninterrupted["generator_sha256"] == sha256_file(SHIPPED / "generator.onnx")
    metrics = read_metrics(tiny_run)
    validations = [m for m in metrics if m.get("event") == "validation"]
    assert [m["step"] for m in validations] == [2, 4, 6]
    best = min(validations, key=lambda m: m["valid_reconstruction_mse"])
    assert uninterrupted["best"]["step"] == best["step"]

    stopped = train_encoder(config, tmp_path, valid_images=mnist.valid.images, max_steps=3,
                            progress=False)
    assert stopped.interrupted and load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    train_encoder(config, tmp_path, valid_images=mnist.valid.images, resume=True,
                  progress=False)
    resumed = load_checkpoint(tmp_path / CHECKPOINT)
    for key, value in uninterrupted["encoder"].items():
        assert torch.equal(resumed["encoder"][key], value), key
    for key, value in uninterrupted["best"]["encoder"].items():
        assert torch.equal(resumed["best"]["encoder"][key], value), key
    assert resumed["optimiser"]["state"][0]["step"] == uninterrupted["optimiser"]["state"][0][
        "step"]

    def without_time(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if k != "seconds"} for m in records]

    assert without_time(read_metrics(tmp_path)) == without_time(metrics)


def test_sigterm_stops_training_with_a_checkpoint(mnist: MNIST, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    draw = encoder_module.step_latents

    def terminated_at_step_one(config, g_config, step):  # as `kill PID` would, mid-run
        if step == 1:
            signal.raise_signal(signal.SIGTERM)
        return draw(config, g_config, step)

    monkeypatch.setattr(encoder_module, "step_latents", terminated_at_step_one)
    config = EncoderConfig(model=str(SHIPPED), **TINY)
    result = train_encoder(config, tmp_path, valid_images=mnist.valid.images, progress=False)
    assert result.interrupted and result.step == 2
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 2


def test_export_adds_an_encoder_the_card_declares_and_the_service_loads(
        tiny_run: Path, mnist_dir: Path, tmp_path: Path) -> None:
    from service.runtime import load_models

    folder = shipped_copy_without_encoder(tmp_path / "models")
    before = json.loads((folder / CARD_FILE).read_text())
    shas = {name: sha256_file(folder / name) for name in ("generator.onnx", "discriminator.onnx")}

    section = export_encoder(tiny_run, folder, data_dir=mnist_dir, plan=SMALL_PLAN)

    after = json.loads((folder / CARD_FILE).read_text())
    assert {k: v for k, v in after.items() if k != "inference"} == {
        **before, "files": {**before["files"], "encoder.onnx": after["files"]["encoder.onnx"]}}
    entry = after["files"]["encoder.onnx"]
    assert entry == {"sha256": sha256_file(folder / "encoder.onnx"), "input": "x",
                     "output": "z", "opset": 18}
    assert {name: sha256_file(folder / name) for name in shas} == shas
    assert section == after["inference"] and section["training"]["steps"] == 6
    encoder, _ = load_best_encoder(tiny_run, load_frozen_generator(folder))
    assert section["parity_max_abs_error"] <= 1e-5
    assert encoder_parity(encoder, folder / "encoder.onnx") <= 1e-5
    for name in section["files"]:
        assert (REPO / name if not Path(name).is_absolute() else Path(name)).is_file(), name
    assert read_card(folder).encoder.file == "encoder.onnx"

    served = load_models(folder.parent, device="cpu")["mnist-mlp"]
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    z = served.sessions["encoder"].run(None, {"x": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(z, encoder(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_export_refuses_an_encoder_trained_for_another_generator(
        tiny_run: Path, mnist_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = load_checkpoint(run / CHECKPOINT)
    state["generator_sha256"] = "0" * 64
    torch.save(state, run / CHECKPOINT)
    with pytest.raises(ValueError, match="trained for a generator.onnx with sha256 0000"):
        export_encoder(run, SHIPPED, data_dir=mnist_dir, plan=SMALL_PLAN)


def test_export_refused_for_parity_leaves_the_model_folder_as_it_was(
        tiny_run: Path, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = shipped_copy_without_encoder(tmp_path)
    listing = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    card = (folder / CARD_FILE).read_bytes()
    monkeypatch.setattr(export_module, "export_onnx",
                        lambda module, example, path, *names: path.write_bytes(b"") or path)
    monkeypatch.setattr(export_module, "encoder_parity", lambda encoder, path: 2e-5)
    with pytest.raises(RuntimeError, match="encoder.onnx: onnxruntime differs from torch"):
        export_encoder(tiny_run, folder, data_dir=mnist_dir, plan=SMALL_PLAN)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == listing
    assert (folder / CARD_FILE).read_bytes() == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist-mlp"]  # no staging left


def test_evaluation_on_a_few_test_images_against_the_search_baselines(
        tiny_run: Path, mnist: MNIST) -> None:
    frozen = load_frozen_generator(SHIPPED)
    encoder, _ = load_best_encoder(tiny_run, frozen)

    def encode(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return encoder(torch.from_numpy(x)).numpy()

    report = evaluate_inference(encode, frozen.g, frozen.latent, mnist.test, load_classifier(),
                                SMALL_PLAN)
    methods = report["subset"]["methods"]
    assert set(methods) == {"encoder", "encoder_refined", "nearest", "nearest_refined"}
    assert all(s["n"] == 8 and 0 <= s["label_agreement"] <= 1 and s["seconds_per_image"] > 0
               for s in methods.values())
    # Adam on the known pixels from E's z ends no worse than E, and so from the nearest
    assert methods["encoder_refined"]["pixel_mse"] <= methods["encoder"]["pixel_mse"]
    assert methods["nearest_refined"]["pixel_mse"] <= methods["nearest"]["pixel_mse"]
    x = mnist.test.images[:8]
    direct = float(np.mean((generate(frozen.g, encode(x)) - x) ** 2))
    assert methods["encoder"]["pixel_mse"] == pytest.approx(direct, rel=1e-5)
    assert report["test"]["encoder"]["n"] == 40
    prior = report["prior"]
    assert prior["prior_variance"] == pytest.approx(1.0)  # U(-sqrt 3, sqrt 3)
    assert 0 < prior["z_mse"] and -1 <= prior["cosine"] <= 1 and prior["n"] == 40
