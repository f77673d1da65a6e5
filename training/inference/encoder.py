"""§7.2 of the paper, learned approximate inference: "an auxiliary network to predict z given
x". E is trained for a shipped G, which stays frozen, on pairs (G(z), z) with a fresh z
from the prior every step, as the released pylearn2 code trains its `inferer` (on the
generator's own samples and their noise; docs/inference.md).

    E:    x (n, 1, 28, 28) in [0, 1] -> 784 -> 1200 ReLU -> 1200 ReLU -> dim
          -> z = centre + half * tanh(a), inside [low, high] of a uniform prior
    loss: L(E) = 1 / (n dim) sum_i ||E(G(z_i)) - z_i||^2,   z_i ~ p(z)

Training writes a run folder (nanoGPT style: one config, one loop):

    config.json     the EncoderConfig
    checkpoint.pt   E, Adam, step, seconds and the best validated E (written every
                    `validate_every` steps and on Ctrl-C / SIGTERM)
    metrics.jsonl   {"step", "z_mse", ...} every `log_every` steps, and an
                    {"event": "validation", ...} line per validation

The z of step s is a function of (seed, s) and nothing else draws random numbers, so a
resumed run reaches the same parameters as one never stopped. The E exported is the one
with the lowest reconstruction error of G(E(x)) on validation images (never test images).
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.contract.card import NETWORK_FILES, Latent
from training.config import JsonConfig, TrainConfig
from training.data.mnist import IMAGE_SHAPE, load_mnist
from training.gan.networks import sample_noise
from training.gan.train import stop_on_signal
from training.inference.search import FrozenGenerator, load_frozen_generator, masked_error
from training.runs import CHECKPOINT, metrics_writer, read_metrics, start_run

# What may change when a run is resumed: how long it goes on and on how many threads.
RESUMABLE_FIELDS = {"steps", "threads"}
ENCODER_FILE = NETWORK_FILES["encoder"]  # what export writes into the model folder
# The prefix of G's weights inside generator.onnx (release/export.py's ImageGenerator.g).


@dataclass
class EncoderConfig(JsonConfig):
    model: str = "models/mnist-mlp"  # the model folder whose generator.onnx E inverts
    hidden: tuple[int, ...] = (1200, 1200)  # ReLU layers, G's own widths mirrored
    steps: int = 10_000  # 636 s on one thread of the busy 2-core CPU (docs/inference.md)
    batch_size: int = 100  # (G(z), z) pairs a step, each z fresh from the prior
    lr: float = 3e-4  # Adam; 1e-3 and 1e-4 were worse on validation at 2,000-3,000 steps
    seed: int = 0  # E's initial weights and the z of every step
    validate_every: int = 500  # steps between validations (and checkpoints)
    validation_images: int = 2_000  # validation images 50,000 ... 50,000 + this - 1
    log_every: int = 50
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        for name in ("steps", "batch_size", "validate_every", "validation_images", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder config: {name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"encoder config: hidden must be layer widths >= 1, got "
                             f"{self.hidden}")
        if not self.lr > 0 or self.threads < 0:
            raise ValueError("encoder config: need lr > 0 and threads >= 0")



class Encoder(nn.Module):
    """E(x) ~ z. An MLP like G run backwards (784 -> hidden ReLU layers -> dim). For a
    uniform prior the output is mapped into its support, z = centre + half * tanh(a): every
    z that E returns is one G was trained on, and no target is out of E's reach."""

    def __init__(self, latent: Latent, hidden: tuple[int, ...],
                 data_dim: int = int(np.prod(IMAGE_SHAPE))) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = data_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, latent.dim)
        self.uniform = latent.distribution == "uniform"
        if self.uniform:
            self.centre = (latent.high + latent.low) / 2
            self.half = (latent.high - latent.low) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, 1, 28, 28) or (n, 784) -> z: (n, dim)."""
        a = self.out(self.hidden(x.flatten(1)))
        return self.centre + self.half * torch.tanh(a) if self.uniform else a


def build_encoder(config: EncoderConfig, latent: Latent) -> Encoder:
    """E with its initial weights (torch's default init, from `config.seed`)."""
    torch.manual_seed(config.seed)
    return Encoder(latent, config.hidden)


def latent_mse(z_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """L = 1 / (n dim) sum_i ||z_hat_i - z_i||^2. The released code's (pylearn2 Linear)
    cost sums over the dim coordinates instead of averaging them: a constant factor that
    Adam's steps do not see."""
    return ((z_hat - z) ** 2).mean()


@torch.no_grad()
def reconstruction_errors(encoder: nn.Module, g: nn.Module, x: torch.Tensor,
                          chunk: int = 1000) -> torch.Tensor:
    """Per image, the mean squared pixel error of G(E(x)) against x, (n,): the search's
    error with every pixel known."""
    parts = []
    for rows in x.split(chunk):
        parts.append(masked_error(g(encoder(rows)), rows, torch.ones_like(rows)))
    return torch.cat(parts)


def step_latents(config: EncoderConfig, g_config: TrainConfig, step: int) -> torch.Tensor:
    """The z of 0-based `step`: a function of (seed, step) alone, so a resumed run draws
    the same ones."""
    stream = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return sample_noise(config.batch_size, g_config, generator=stream)


@dataclass
class EncoderRun:
    out_dir: Path
    step: int
    seconds: float
    interrupted: bool
    best_step: int | None
    best_valid_mse: float | None


def _save_checkpoint(path: Path, encoder: Encoder, optimiser: torch.optim.Optimizer,
                     config: EncoderConfig, frozen: FrozenGenerator, step: int, seconds: float,
                     best: dict | None) -> None:
    state = {"encoder": encoder.state_dict(), "optimiser": optimiser.state_dict(),
             "step": step, "seconds": seconds, "best": best, "config": config.to_dict(),
             "generator_sha256": frozen.sha256, "device": "cpu", "torch": torch.__version__}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a broken checkpoint


def train_encoder(config: EncoderConfig, out_dir: str | Path, *,
                  valid_images: np.ndarray | None = None, data_dir: str | Path | None = None,
                  resume: bool = False, max_steps: int | None = None,
                  progress: bool = True) -> EncoderRun:
    """Train (or resume) E for the G of `config.model` into `out_dir`, selecting on the
    first `config.validation_images` of `valid_images` (default: MNIST's validation split).
    `max_steps` stops early, as an interruption would; Ctrl-C / SIGTERM save a checkpoint
    and return with `interrupted=True`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    frozen = load_frozen_generator(Path(config.model))
    if valid_images is None:
        valid_images = load_mnist(data_dir).valid.images
    x_valid = torch.from_numpy(np.ascontiguousarray(valid_images[:config.validation_images],
                                                    dtype=np.float32))
    encoder = build_encoder(config, frozen.latent)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    step, seconds_before, best = 0, 0.0, None
    state = start_run(out, config, resume)
    if state is not None:
        if state["generator_sha256"] != frozen.sha256:
            raise ValueError(f"{out / CHECKPOINT} was trained for a generator.onnx with sha256 "
                             f"{state['generator_sha256']}; {config.model}'s is {frozen.sha256}")
        encoder.load_state_dict(state["encoder"])
        optimiser.load_state_dict(state["optimiser"])
        step, seconds_before, best = state["step"], state["seconds"], state["best"]
    started = time.perf_counter()
    window: list[float] = []
    interrupted = False

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def checkpoint() -> None:
        _save_checkpoint(out / CHECKPOINT, encoder, optimiser, config, frozen, step,
                         elapsed(), best)

    bar = tqdm(range(step, config.steps), initial=step, total=config.steps, desc="encoder",
               disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 30)
    with stop_on_signal() as flag, metrics_writer(out) as log:
        for _ in bar:
            z = step_latents(config, frozen.config, step)
            with torch.no_grad():
                x = frozen.g(z)
            loss = latent_mse(encoder(x), z)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            window.append(loss.item())
            if step % config.log_every == 0:
                log({"step": step, "z_mse": float(np.mean(window)),
                     "seconds": round(elapsed(), 3)})
                bar.set_postfix(z_mse=f"{np.mean(window):.4f}", refresh=False)
                window.clear()
            if step % config.validate_every == 0 or step == config.steps:
                # selection: G(E(x)) against x on validation images, lower is better
                mse = float(reconstruction_errors(encoder, frozen.g, x_valid).mean())
                if best is None or mse < best["valid_mse"]:
                    best = {"step": step, "valid_mse": mse,
                            "encoder": copy.deepcopy(encoder.state_dict())}
                log({"event": "validation", "step": step, "valid_reconstruction_mse": mse,
                     "best_step": best["step"], "seconds": round(elapsed(), 3)})
                bar.set_postfix(valid_mse=f"{mse:.4f}", best_step=best["step"], refresh=False)
                checkpoint()
            if flag["stop"] or (max_steps is not None and step >= max_steps):
                interrupted = step < config.steps
                break
    bar.close()
    checkpoint()
    return EncoderRun(out, step, elapsed(), interrupted,
                      best and best["step"], best and best["valid_mse"])


def validation_scores(run: Path) -> dict[int, float]:
    """The run's validation reconstruction MSE by step, from metrics.jsonl."""
    return {m["step"]: m["valid_reconstruction_mse"] for m in read_metrics(run)
            if m.get("event") == "validation"}

