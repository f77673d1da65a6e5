"""The service's runtime: model folders checked against their cards and loaded into
onnxruntime, and the networks' calls. No torch, no BentoML.

Every shape comes from the card (service/contract/card.py): a model is a folder
`models/<name>/` with `model.json`, `generator.onnx` and, optionally, `discriminator.onnx`
and `encoder.onnx`.
Anything missing, corrupt or not matching its card raises CardError naming the file and
the problem, so the service stops at start-up.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract.card import CARD_FILE, CardError, ModelCard, read_card, verify_files
from service.settings import available_cores

log = logging.getLogger("counterfeit")

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
    # onnxruntime-gpu[cuda,cudnn] (the serve-gpu extra) brings CUDA and cuDNN as pip wheels,
    # which its CUDA provider finds only once preloaded; without them (the CUDA base image,
    # LD_LIBRARY_PATH) the system's libraries load. Failures print, and load_model then
    # stops the service if CUDA did not take (require_cuda).
    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu 1.21 and later
        ort.preload_dlls()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


# onnxruntime's CUDA provider multiplies in TF32 by default (10-bit mantissas): on an H200
# the shipped generator's pixels then differ from the CPU provider's by up to 2.4e-2, with
# it off by 3e-6. The MLPs are far too small for TF32's speed to matter.
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}


def make_session(model: str | bytes | Path, providers: list[str],
                 threads: int) -> ort.InferenceSession:
    """An onnxruntime session as the service runs one: `threads` intra-op threads that
    sleep when idle (spinning ones take the cores that parse HTTP), warnings off."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(model) if isinstance(model, Path) else model, options,
                                providers=[(p, CUDA_PROVIDER_OPTIONS)
                                           if p == "CUDAExecutionProvider" else p
                                           for p in providers])


def threads_per_worker(workers: int) -> int:
    """onnxruntime intra-op threads per worker: the cores this process may use shared out,
    at least 1 (with the default of a worker per core: 1, which docs/benchmarks.md section
    1 measures)."""
    return max(1, available_cores() // max(1, workers))


@dataclass
class Model:
    """A served model: its card and one onnxruntime session per network."""

    card: ModelCard
    sessions: dict[str, ort.InferenceSession]  # role -> session
    provider: str

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def has_discriminator(self) -> bool:
        return "discriminator" in self.sessions

    @property
    def has_encoder(self) -> bool:
        return "encoder" in self.sessions

    @property
    def inpaints(self) -> bool:
        """G completes images given their visible pixels (§7.3) rather than drawing them."""
        return self.card.inpainting is not None

    def _run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs of network `role` for `feeds`. Plain session.run on every provider:
        on an H200, onnxruntime's I/O binding was slower at every batch size (3.4× at
        16,384 rows; docs/benchmarks.md, GPU section)."""
        return self.sessions[role].run(None, feeds)

    def latents(self, n: int, seed: int) -> np.ndarray:
        """The seed contract (card.Latent.sample)."""
        return self.card.latent.sample(n, seed)

    def _feeds(self, name: str, array: np.ndarray, labels: np.ndarray | None,
               mask: np.ndarray | None = None) -> dict:
        feeds = {name: array}
        inpainting = self.card.inpainting
        if inpainting is not None:
            if mask is None or len(mask) != len(array):
                raise ValueError(f"{self.name} inpaints: one mask per row is needed")
            feeds[inpainting.mask_input] = np.ascontiguousarray(mask, np.float32)
        conditioning = self.card.conditioning
        if conditioning is not None:
            if labels is None or len(labels) != len(array):
                raise ValueError(f"{self.name} is conditional: one label per row is needed")
            feeds[conditioning.input] = conditioning.one_hot(labels)
        return feeds

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) float32 latents -> (n, *image.shape) float32 images in [0, 1]."""
        z = np.ascontiguousarray(z, np.float32)
        x = self._run("generator", self._feeds("z", z, labels))[0]
        # onnxruntime's float32 sigmoid can return 1 + 1 ulp: keep the [0, 1] promise
        return np.clip(x, 0.0, 1.0, out=x).reshape(len(z), *self.card.image.card_shape)

    def logits(self, x: np.ndarray, labels: np.ndarray | None = None,
               mask: np.ndarray | None = None) -> np.ndarray:
        """(n, *image.shape) float32 images in [0, 1] -> (n,) logits of D (an inpainting
        model's D also reads the mask the image was completed under)."""
        x = np.ascontiguousarray(x, np.float32).reshape(len(x), *self.card.image.shape)
        return self._run("discriminator", self._feeds("x", x, labels, mask))[0].reshape(len(x))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """§7.2: (n, *image.shape) images in [0, 1] -> (n, dim) latents E(x) with G(E(x))
        close to x."""
        x = np.ascontiguousarray(x, np.float32).reshape(len(x), *self.card.image.shape)
        return self._run("encoder", {"x": x})[0]

    def complete(self, z: np.ndarray, visible: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """§7.3: G(z | visible pixels): (n, dim) latents, (n, *image.shape) images and
        (n, H, W) bool masks (True: hidden) -> (n, *card shape) images whose hidden pixels
        G drew and whose visible pixels are `visible`'s, exactly (the graph composites too;
        the copy here makes "exactly" independent of float arithmetic in any graph)."""
        inpainting = self.card.inpainting
        shape = self.card.image.shape
        visible = np.ascontiguousarray(visible, np.float32).reshape(len(z), *shape)
        hidden = np.asarray(mask, bool).reshape(len(z), *shape[1:])
        feeds = {"z": np.ascontiguousarray(z, np.float32), inpainting.visible_input: visible,
                 inpainting.mask_input: hidden.astype(np.float32)}
        x = self._run("generator", feeds)[0]
        np.clip(x, 0.0, 1.0, out=x)
        x = np.where(hidden[:, None], x, visible)  # every channel of a hidden pixel
        return x.reshape(len(z), *self.card.image.card_shape)


def _check_io(session: ort.InferenceSession, path: Path, inputs: dict[str, tuple],
              outputs: dict[str, tuple]) -> None:
    """Names and shapes (a symbolic batch axis first) of the graph against the card."""
    for kind, expected, actual in (("input", inputs, session.get_inputs()),
                                   ("output", outputs, session.get_outputs())):
        got = {a.name: a.shape for a in actual}
        if set(got) != set(expected):
            raise CardError(f"{path}: {kind}s are {sorted(got)}, the card says "
                             f"{sorted(expected)}")
        for name, shape in expected.items():
            if len(got[name]) != len(shape) + 1 or isinstance(got[name][0], int) or \
                    tuple(got[name][1:]) != shape:
                raise CardError(f"{path}: {kind} '{name}' has shape {got[name]}, expected "
                                 f"[batch, {', '.join(map(str, shape))}]")


def load_model(folder: Path, providers: list[str], threads: int,
               require_cuda: bool = False) -> Model:
    card = read_card(folder)
    verify_files(folder, card)
    sessions = {}
    for role, network in card.networks.items():
        path = folder / network.file
        try:
            sessions[role] = make_session(path, providers, threads)
        except Exception as err:  # onnxruntime raises its own exception types
            raise CardError(f"{path}: onnxruntime cannot load it ({err})") from None
        _check_io(sessions[role], path, network.inputs, network.outputs)
    provider = sessions["generator"].get_providers()[0]
    if providers[0] == "CUDAExecutionProvider" and provider != providers[0]:
        if require_cuda:
            raise DeviceError(f"{folder}: onnxruntime fell back to {provider} although CUDA "
                              "was asked for (CUDA / cuDNN libraries missing?)")
        log.warning("onnxruntime could not use CUDA; serving %s on %s", folder.name, provider)
    model = Model(card, sessions, provider)
    # warm-up: the first call of a session allocates; do it before /readyz says yes
    labels = np.zeros(2, np.int64) if card.conditioning else None
    z = model.latents(2, 0)
    if model.inpaints:
        mask = np.zeros((2, *card.image.shape[1:]), bool)
        mask[:, 0, 0] = True
        images = model.complete(z, np.zeros((2, *card.image.shape), np.float32), mask)
    else:
        mask = None
        images = model.generate(z, labels)
    if model.has_discriminator:
        model.logits(images, labels, mask)
    if model.has_encoder:
        model.encode(images)
    return model


def model_folders(models_dir: Path) -> list[Path]:
    """The model folders of `models_dir`: every sub-folder with an entry named model.json
    (models/ holds only served models), whatever it is: a card that is a dangling symlink,
    a symlink loop, a FIFO or a folder stops start-up in read_card, it is not skipped.
    Other entries are left alone."""
    if not models_dir.is_dir():
        raise CardError(f"{models_dir}: no such models folder")
    folders = sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and os.path.lexists(p / CARD_FILE))
    if not folders:
        raise CardError(f"{models_dir}: no model folder (a folder with {CARD_FILE} and "
                         "generator.onnx); train and export one (README)")
    return folders


def load_models(models_dir: Path, device: str = "auto", threads: int = 1) -> dict[str, Model]:
    """Every model folder of `models_dir`, checked and warmed up."""
    providers = choose_providers(device)
    models = {p.name: load_model(p, providers, threads, require_cuda=device == "cuda")
              for p in model_folders(models_dir)}
    for m in models.values():
        log.info("loaded %s (%s) on %s", m.name, m.card.version, m.provider)
    return models


# What a route asks of a model, and why a model that cannot do it cannot (for the 400).
TASKS = {
    "sample": (lambda m: not m.inpaints,
               "completes images given their visible pixels (§7.3): use /inpaint"),
    "score": (lambda m: m.has_discriminator and not m.inpaints,
              "has no discriminator that scores an image alone"),
    "invert": (lambda m: m.has_encoder, "has no encoder (encoder.onnx) to invert G with"),
    "inpaint": (lambda m: m.inpaints, "has no mask input: it draws whole images"),
}


def why_not(model: Model, task: str) -> str | None:
    """None if `model` can do `task` (a key of TASKS), else the reason it cannot."""
    can, reason = TASKS[task]
    return None if can(model) else f"model {model.name} {reason}"


def default_model(models: dict[str, Model], task: str = "sample") -> str | None:
    """The model of requests that name none: for sampling, the first by name that needs no
    label, so that a request without `model` works without one too; for the other tasks
    the first by name that can do them (None: no loaded model can)."""
    able = [name for name in models if why_not(models[name], task) is None]
    if task == "sample" and not able:
        able = list(models)
    return min(able, key=lambda name: (models[name].card.conditioning is not None, name),
               default=None)
