"""The service's runtime: model checks at load, the seed contract, provider choice; on
synthetic models (tests/service/synthetic_models.py), so no torch is needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service import runtime
from service.contract.card import CardError
from service.runtime import DeviceError, choose_providers, gpu_present, load_models
from tests.model_damage import edit_card, free_card
from tests.service.synthetic_models import build_model


@pytest.fixture()
def models_copy(tmp_path: Path) -> Path:
    build_model(tmp_path / "models", "tiny")
    return tmp_path / "models"


def test_loads_and_keeps_the_seed_contract(runtime_models: dict) -> None:
    model = runtime_models["tiny"]
    assert model.provider == "CPUExecutionProvider"
    z = model.latents(5, seed=7)
    expected = np.random.default_rng(7).uniform(-np.sqrt(3), np.sqrt(3), (5, 100))
    np.testing.assert_array_equal(z, expected.astype(np.float32))
    images = model.generate(z)
    assert images.shape == (5, 28, 28) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    # batching does not change a row: rows of one call equal separate calls
    np.testing.assert_allclose(model.generate(z[2:3])[0], images[2], atol=1e-6)
    assert model.logits(images).shape == (5,)


def _corrupt(models: Path, name: str) -> None:
    raw = bytearray((models / "tiny" / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (models / "tiny" / name).write_bytes(bytes(raw))




def _replace_network(models: Path) -> Path:
    (models / "tiny" / "generator.onnx").unlink()
    return models / "tiny" / "generator.onnx"


@pytest.mark.parametrize(("damage", "message"), [
    (lambda m: (m / "tiny" / "generator.onnx").unlink(), "generator.onnx: missing"),
    (lambda m: _corrupt(m, "discriminator.onnx"), "discriminator.onnx: sha256 .* does not match"),
    (lambda m: (m / "tiny" / "generator.onnx").write_bytes(b""), "generator.onnx: sha256"),
    (lambda m: (m / "tiny" / "model.json").write_text("{not json"), "model.json: not a readable"),
    (lambda m: (m / "tiny" / "model.json").write_bytes(b'{"name": "\xff"}'),
     "model.json: not a readable"),
    (lambda m: edit_card(m / "tiny", latent=None), "'latent' must be an object"),
    (lambda m: edit_card(m / "tiny", image={"shape": [28]}),
     r"image.shape must be \[height, width\]"),
    (lambda m: edit_card(m / "tiny", latent={"dim": 100, "distribution": "uniform",
                                             "low": -1e308, "high": 1e308}),
     "finite numbers low < high within"),
    (lambda m: edit_card(m / "tiny", name="other"), "is not the folder's name"),
    # a folder whose model.json is not a regular file is a broken model, not skipped
    (lambda m: free_card(m / "tiny").symlink_to("model.json"), "model.json: not a readable JSON "
     r"model card \(Too many levels of symbolic links\)"),
    (lambda m: free_card(m / "tiny").symlink_to("gone.json"), r"model.json: .*\(No such file"),
    (lambda m: free_card(m / "tiny").mkdir(), r"model.json: .*\(Is a directory\)"),
    (lambda m: _replace_network(m).symlink_to("gone.onnx"),
     r"generator.onnx: missing \(the card lists it\)"),
    (lambda m: _replace_network(m).mkdir(), r"generator.onnx: not a regular file"),
])
def test_a_damaged_model_stops_loading_naming_the_file(models_copy: Path, damage,
                                                       message: str) -> None:
    damage(models_copy)
    with pytest.raises(CardError, match=message):
        load_models(models_copy, device="cpu")


def test_a_card_that_does_not_match_the_graph_is_refused(models_copy: Path) -> None:
    card_path = models_copy / "tiny" / "model.json"
    card = json.loads(card_path.read_text())
    card["latent"]["dim"] = 64  # the graph takes 100
    card_path.write_text(json.dumps(card))
    with pytest.raises(CardError, match="input 'z' has shape .* expected \\[batch, 64\\]"):
        load_models(models_copy, device="cpu")


def test_an_empty_models_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="no model folder"):
        load_models(tmp_path, device="cpu")


def test_device_setting() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        choose_providers("tpu")
    if gpu_present():
        pytest.skip("a GPU is present: the no-GPU paths cannot be reached")
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="no NVIDIA device"):
        choose_providers("cuda")


def test_choosing_cuda_preloads_its_libraries(monkeypatch) -> None:
    """onnxruntime-gpu finds CUDA and cuDNN installed as pip wheels only after
    preload_dlls(); the CPU path never calls it."""
    calls = []
    monkeypatch.setattr(runtime, "gpu_present", lambda: True)
    monkeypatch.setattr(runtime.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime.ort, "preload_dlls", lambda: calls.append(1), raising=False)
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert calls == []
    assert choose_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert calls == [1, 1]


def test_cuda_sessions_multiply_in_full_float32(monkeypatch, models_copy: Path) -> None:
    """onnxruntime's CUDA provider defaults to TF32, whose images differ from the CPU
    provider's by 1e-2; every CUDA session the service makes turns it off."""
    made = []
    monkeypatch.setattr(runtime.ort, "InferenceSession",
                        lambda model, options, providers: made.append(providers))
    runtime.make_session(models_copy / "tiny" / "generator.onnx",
                         ["CUDAExecutionProvider", "CPUExecutionProvider"], threads=1)
    runtime.make_session(models_copy / "tiny" / "generator.onnx",
                         ["CPUExecutionProvider"], threads=1)
    assert made == [[("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"],
                    ["CPUExecutionProvider"]]


def test_images_stay_within_0_and_1_when_the_sigmoid_overshoots(models_copy: Path) -> None:
    """onnxruntime's float32 sigmoid returned 1.0000001 for some rows of the shipped model
    (seen by the locust checks); the runtime clips. A session stand-in returns such rows."""
    model = load_models(models_copy, device="cpu")["tiny"]

    class Overshooting:
        def run(self, outputs, feeds):
            n = len(feeds["z"])
            x = np.full((n, 1, 28, 28), np.nextafter(np.float32(1), np.float32(2)))
            x[:, :, 0, 0] = -np.float32(1e-7)
            return [x]

    model.sessions["generator"] = Overshooting()
    images = model.generate(np.zeros((3, 100), np.float32))
    assert images.min() == 0.0 and images.max() == 1.0


def test_the_default_model_is_the_first_that_needs_no_label(runtime_models: dict) -> None:
    from service.runtime import default_model

    assert runtime_models["cond"].card.conditioning is not None
    assert default_model(runtime_models) == "gonly"  # "cond" comes first by name
    assert default_model({"cond": runtime_models["cond"]}) == "cond"


def test_each_task_defaults_to_the_first_model_that_can_do_it(runtime_models: dict) -> None:
    from service.runtime import default_model, why_not

    some = {name: runtime_models[name] for name in ("cond", "paint", "tiny")}
    assert default_model(some, "inpaint") == "paint"
    assert default_model(some, "invert") == "tiny"  # the only one with an encoder
    assert default_model({"cond": runtime_models["cond"]}, "invert") is None
    assert why_not(runtime_models["paint"], "inpaint") is None
    assert "use /inpaint" in why_not(runtime_models["paint"], "sample")
    assert "no encoder" in why_not(runtime_models["cond"], "invert")
