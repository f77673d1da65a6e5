"""The service's runtime: model cards and ONNX files checked and loaded into onnxruntime,
the seed contract, and the generator / discriminator calls. No torch, no BentoML.

A model is a folder `models/<name>/` with `model.json`, `generator.onnx` and
`discriminator.onnx` (DESIGN.md). Anything missing, corrupt or not matching its card
raises ModelError naming the file and the problem, so the service stops at start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("counterfeit")

IMAGE_SHAPE = (28, 28)


class ModelError(RuntimeError):
    """A model folder that cannot be served; the message names the file and the reason."""


class DeviceError(RuntimeError):
    """COUNTERFEIT_DEVICE asks for something this machine does not have."""


def gpu_present() -> bool:
    """A real NVIDIA GPU, not just the CUDA provider being importable: onnxruntime lists
    CUDA as available on machines without one and silently falls back to the CPU."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def choose_providers(device: str) -> list[str]:
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"COUNTERFEIT_DEVICE must be auto, cpu or cuda, got {device!r}")
    cuda_ready = gpu_present() and "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda_ready:
        raise DeviceError("COUNTERFEIT_DEVICE=cuda but no usable GPU: "
                          + ("no NVIDIA device found" if not gpu_present() else
                             "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"))
    if device == "auto" and not cuda_ready and gpu_present():
        log.warning("a GPU is present but onnxruntime has no CUDA provider: serving on CPU")
    if device == "cpu" or not cuda_ready:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


@dataclass
class Model:
    name: str
    card: dict
    generator: ort.InferenceSession
    discriminator: ort.InferenceSession
    provider: str
    latent_dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.latent_dim = int(self.card["latent"]["dim"])

    def latents(self, n: int, seed: int) -> np.ndarray:
        """The seed contract: default_rng(seed).uniform(low, high, (n, dim)) as float32."""
        latent = self.card["latent"]
        rng = np.random.default_rng(seed)
        if latent["distribution"] == "uniform":
            z = rng.uniform(latent["low"], latent["high"], (n, self.latent_dim))
        else:
            z = rng.standard_normal((n, self.latent_dim))
        return z.astype(np.float32)

    def generate(self, z: np.ndarray) -> np.ndarray:
        """(n, dim) float32 latents -> (n, 28, 28) float32 images in [0, 1]."""
        x = self.generator.run(None, {"z": np.ascontiguousarray(z, np.float32)})[0]
        # onnxruntime's float32 sigmoid can return 1 + 1 ulp: keep the [0, 1] promise
        return np.clip(x, 0.0, 1.0, out=x).reshape(len(z), *IMAGE_SHAPE)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, 28, 28) float32 images in [0, 1] -> (n,) logits of D."""
        x = np.ascontiguousarray(x, np.float32).reshape(len(x), 1, *IMAGE_SHAPE)
        return self.discriminator.run(None, {"x": x})[0].reshape(len(x))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_card(folder: Path) -> dict:
    path = folder / "model.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: not a readable JSON model card ({err})") from err
    for key in ("name", "latent", "image", "files"):
        if key not in card:
            raise ModelError(f"{path}: the card has no '{key}'")
    latent = card["latent"]
    if not isinstance(latent.get("dim"), int) or latent["dim"] < 1 or \
            latent.get("distribution") not in ("uniform", "normal"):
        raise ModelError(f"{path}: latent must give dim >= 1 and distribution uniform|normal")
    if latent["distribution"] == "uniform" and not (
            isinstance(latent.get("low"), float | int)
            and isinstance(latent.get("high"), float | int) and latent["low"] < latent["high"]):
        raise ModelError(f"{path}: a uniform latent needs numbers low < high")
    if list(card["image"].get("shape", [])) != list(IMAGE_SHAPE):
        raise ModelError(f"{path}: image shape must be {list(IMAGE_SHAPE)}")
    return card


def _check_io(session: ort.InferenceSession, path: Path, inputs: dict[str, list],
              outputs: dict[str, list]) -> None:
    """Names and shapes (a symbolic batch axis first) of the graph against the card."""
    for kind, expected, actual in (("input", inputs, session.get_inputs()),
                                   ("output", outputs, session.get_outputs())):
        got = {a.name: a.shape for a in actual}
        if set(got) != set(expected):
            raise ModelError(f"{path}: {kind}s are {sorted(got)}, the card says "
                             f"{sorted(expected)}")
        for name, shape in expected.items():
            if len(got[name]) != len(shape) + 1 or isinstance(got[name][0], int) or \
                    list(got[name][1:]) != shape:
                raise ModelError(f"{path}: {kind} '{name}' has shape {got[name]}, expected "
                                 f"[batch, {', '.join(map(str, shape))}]")


def load_model(folder: Path, providers: list[str], threads: int,
               require_cuda: bool = False) -> Model:
    card = _read_card(folder)
    files = card["files"]
    sessions = {}
    for net in ("generator", "discriminator"):
        filename = f"{net}.onnx"
        path = folder / filename
        entry = files.get(filename)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise ModelError(f"{folder / 'model.json'}: no sha256 for {filename}")
        if not path.is_file():
            raise ModelError(f"{path}: missing (the card lists it)")
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise ModelError(f"{path}: sha256 {digest} does not match the card's "
                             f"{entry['sha256']} (corrupt or replaced)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # idle onnxruntime threads spin by default, taking the cores that parse HTTP
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            sessions[net] = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: onnxruntime cannot load it ({err})") from err
    dim = card["latent"]["dim"]
    _check_io(sessions["generator"], folder / "generator.onnx", {"z": [dim]},
              {"x": [1, *IMAGE_SHAPE]})
    _check_io(sessions["discriminator"], folder / "discriminator.onnx",
              {"x": [1, *IMAGE_SHAPE]}, {"logit": [1]})
    provider = sessions["generator"].get_providers()[0]
    if providers[0] == "CUDAExecutionProvider" and provider != providers[0]:
        if require_cuda:
            raise DeviceError(f"{path}: onnxruntime fell back to {provider} although CUDA was "
                              "asked for (CUDA / cuDNN libraries missing?)")
        log.warning("onnxruntime could not use CUDA; serving %s on %s", folder.name, provider)
    model = Model(card["name"], card, sessions["generator"], sessions["discriminator"],
                  provider)
    if card["name"] != folder.name:
        raise ModelError(f"{folder / 'model.json'}: name '{card['name']}' is not the folder's "
                         f"name '{folder.name}'")
    # warm-up: the first call of a session allocates; do it before /readyz says yes
    model.logits(model.generate(model.latents(2, 0)))
    return model


def _is_gan_folder(folder: Path) -> bool:
    """A folder with a card, unless the card is readable and lists no generator (the
    evaluation's classifier lives in models/ too). A broken card counts, so it is reported."""
    if not (folder / "model.json").is_file():
        return False
    try:
        return "generator.onnx" in json.loads((folder / "model.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return True


def load_models(models_dir: Path, device: str = "auto", threads: int = 1) -> dict[str, Model]:
    """Every `models_dir/*/` folder that holds a generator (the evaluation classifier does
    not), checked and warmed up."""
    providers = choose_providers(device)
    if not models_dir.is_dir():
        raise ModelError(f"{models_dir}: no such models folder")
    folders = sorted(p for p in models_dir.iterdir() if _is_gan_folder(p))
    if not folders:
        raise ModelError(f"{models_dir}: no model folder with a generator (model.json + "
                         "generator.onnx); train and export one (README)")
    models = {p.name: load_model(p, providers, threads, require_cuda=device == "cuda")
              for p in folders}
    for m in models.values():
        log.info("loaded %s (%s) on %s", m.name, m.card.get("version", "?"), m.provider)
    return models


def settings_threads(workers: int) -> int:
    """onnxruntime intra-op threads per worker: the cores shared out, at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
