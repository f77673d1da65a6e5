"""Algorithm 1 of the paper: k steps of D, then one step of G, over minibatches.

Training writes a run folder (`training/runs.py`). Resuming from a checkpoint (written
every epoch and on Ctrl-C) gives the same parameters as never stopping: the data order of
each epoch comes from (seed, epoch) and the noise and dropout from the global torch RNG,
whose state the checkpoint keeps.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.contract.masks import FAMILIES, family_mask, training_masks
from training.config import TrainConfig
from training.data.mnist import IMAGE_SHAPE, load_mnist
from training.data.toy import toy_distribution
from training.figures.grid import save_grid
from training.figures.toy import plot_toy_samples
from training.gan.losses import discriminator_loss, generator_loss
from training.gan.networks import Discriminator, Generator, build_networks, one_hot, sample_noise
from training.gan.optim import learning_rate, make_optimizer, momentum_at, set_hyperparameters
from training.runs import (
    CHECKPOINT,
    iterations_per_epoch,
    metrics_writer,
    restore_checkpoint,
    sample_file,
    save_checkpoint,
    save_snapshots,
    start_run,
)

N_FIXED_SAMPLES = {True: 100, False: 2000}  # a 10x10 grid of images, or a toy scatter


class TrainingDiverged(RuntimeError):
    """The losses stopped being finite; the last checkpoint (from before) is kept."""

    def __init__(self, step: int, stats: dict[str, float]) -> None:
        super().__init__(f"training diverged at iteration {step}: {stats}; the checkpoint "
                         "of the last finished epoch is kept")
        self.step = step


@dataclass
class RunResult:
    out_dir: Path
    step: int
    epoch: int  # completed epochs
    interrupted: bool
    seconds: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return torch.device(name)


def training_data(config: TrainConfig, data_dir: str | Path | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, data_dim) float32: MNIST train 0-49,999, or a fixed draw from a toy mixture; and
    the (n,) class labels when the model is conditional."""
    if config.image_data:
        train = load_mnist(data_dir).train
        return train.images, train.labels if config.classes else None
    mixture = toy_distribution(config.dataset, config.toy_std)
    return mixture.sample(config.toy_size, np.random.default_rng(config.seed)), None


@dataclass(frozen=True)
class Batch:
    """A real minibatch and what G and D read beside z and x: nothing for the paper's GAN;
    the one-hot labels c for §7.1's (to both); for §7.3's inpainting, the visible pixels and
    the mask (to G) and the mask (to D), G's image being kept only where the mask hides."""

    x: torch.Tensor
    g_cond: torch.Tensor | None = None
    d_cond: torch.Tensor | None = None
    hidden: torch.Tensor | None = None  # inpainting: 1 where G completes, 0 where x is kept

    def fake(self, g: Generator, z: torch.Tensor) -> torch.Tensor:
        out = g(z, self.g_cond)
        return out if self.hidden is None else self.hidden * out + (1 - self.hidden) * self.x


def make_batch(config: TrainConfig, x: torch.Tensor, c: torch.Tensor | None,
               rng: np.random.Generator) -> Batch:
    """The Batch of real images `x` (and one-hot labels `c`); an inpainting model's masks
    come from `rng`, one family and size per example."""
    if config.classes:
        return Batch(x, c, c)
    if config.inpainting:
        masks = training_masks(len(x), rng, IMAGE_SHAPE[1:]).reshape(len(x), -1)
        m = torch.from_numpy(masks.astype(np.float32)).to(x.device)
        return Batch(x, torch.cat([x * (1 - m), m], dim=1), m, m)
    return Batch(x)


def alternating_iteration(g: Generator, d: Discriminator, opt_g: torch.optim.Optimizer,
                          opt_d: torch.optim.Optimizer, real_batches: list[Batch],
                          config: TrainConfig) -> dict[str, float]:
    """Algorithm 1: one D step per real batch (k of them), then one G step on fresh noise.

    A conditional model's fakes take the condition of the real batch beside them (its
    labels, or its masks and visible pixels), so D sees the same classes or masks on both
    sides and G is asked for them at the data's frequencies.
    """
    for batch in real_batches:
        z = sample_noise(len(batch.x), config, batch.x.device)
        with torch.no_grad():
            fake = batch.fake(g, z)
        real_logits, fake_logits = d(batch.x, batch.d_cond), d(fake, batch.d_cond)
        d_loss = discriminator_loss(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        (config.d_loss_scale * d_loss).backward()
        opt_d.step()
    z = sample_noise(len(batch.x), config, batch.x.device)
    g_loss = generator_loss(d(batch.fake(g, z), batch.d_cond), config.g_loss)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward(inputs=list(g.parameters()))
    opt_g.step()
    return _stats(d_loss, g_loss, real_logits, fake_logits)


def simultaneous_iteration(g: Generator, d: Discriminator, opt_g: torch.optim.Optimizer,
                           opt_d: torch.optim.Optimizer, batch: Batch,
                           config: TrainConfig) -> dict[str, float]:
    """The released code's update: both gradients from one forward pass, both steps at once."""
    z = sample_noise(len(batch.x), config, batch.x.device)
    real_logits = d(batch.x, batch.d_cond)
    fake_logits = d(batch.fake(g, z), batch.d_cond)
    d_loss = discriminator_loss(real_logits, fake_logits)
    g_loss = generator_loss(fake_logits, config.g_loss)
    opt_d.zero_grad(set_to_none=True)
    opt_g.zero_grad(set_to_none=True)
    (config.d_loss_scale * d_loss).backward(inputs=list(d.parameters()), retain_graph=True)
    g_loss.backward(inputs=list(g.parameters()))
    opt_d.step()
    opt_g.step()
    return _stats(d_loss, g_loss, real_logits, fake_logits)


def _stats(d_loss: torch.Tensor, g_loss: torch.Tensor, real_logits: torch.Tensor,
           fake_logits: torch.Tensor) -> dict[str, float]:
    values = torch.stack([d_loss.detach(), g_loss.detach(),
                          torch.sigmoid(real_logits.detach()).mean(),
                          torch.sigmoid(fake_logits.detach()).mean()]).tolist()
    return dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), values, strict=True))


def epoch_order(config: TrainConfig, epoch: int, n: int) -> torch.Tensor:
    """The shuffle of 1-based `epoch`: a function of (seed, epoch) alone, so a resumed run
    sees the same minibatches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003
                                                                      + epoch))


@contextmanager
def stop_on_signal() -> Iterator[dict[str, bool]]:
    """Turn Ctrl-C / SIGTERM into a flag the loop checks after each iteration."""
    flag = {"stop": False}

    def handler(signum: int, frame: object) -> None:
        flag["stop"] = True

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fixed_condition(config: TrainConfig, x_all: torch.Tensor) -> Batch:
    """What the per-epoch sample grid (10 wide, 10 rows for images) is conditioned on: row
    r is class r mod classes; or for inpainting, training image r under mask family r mod 4,
    half hidden, ten completions per row."""
    n = N_FIXED_SAMPLES[config.image_data]
    rows = torch.arange(n, device=x_all.device) // 10
    if config.classes:
        return make_batch(config, x_all[:n], one_hot(rows % config.classes, config.classes),
                          np.random.default_rng(0))
    if config.inpainting:
        images = x_all[: n // 10].repeat_interleave(10, dim=0)
        masks = np.stack([family_mask(FAMILIES[r % len(FAMILIES)], 0.5,
                                      np.random.default_rng(r), IMAGE_SHAPE[1:])
                          for r in range(n // 10)]).reshape(n // 10, -1)
        m = torch.from_numpy(masks.astype(np.float32)).to(x_all.device)
        m = m.repeat_interleave(10, dim=0)
        return Batch(images, torch.cat([images * (1 - m), m], dim=1), m, m)
    return Batch(x_all[:n])


def save_samples(path: Path, g: Generator, fixed_z: torch.Tensor, fixed: Batch,
                 config: TrainConfig, title: str) -> Path:
    g.eval()
    with torch.no_grad():
        x = fixed.fake(g, fixed_z).cpu().numpy()
    g.train()
    if config.image_data:
        return save_grid(path, x.reshape(-1, *IMAGE_SHAPE[1:]), cols=10)
    return plot_toy_samples(path, x, toy_distribution(config.dataset, config.toy_std), title)


def train(config: TrainConfig, out_dir: str | Path, *, data: np.ndarray | None = None,
          labels: np.ndarray | None = None, data_dir: str | Path | None = None,
          resume: bool = False, max_steps: int | None = None, progress: bool = True) -> RunResult:
    """Run (or resume) training into `out_dir` on `data` (and `labels`, for a conditional
    model), else the config's dataset. `max_steps` stops early, as an interruption would;
    Ctrl-C / SIGTERM save a checkpoint and return with `interrupted=True`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    train_x, train_y = training_data(config, data_dir) if data is None else (data, labels)
    if train_x.ndim != 2 or train_x.shape[1] != config.data_dim:
        raise ValueError(f"training data must be (n, {config.data_dim}), got {train_x.shape}")
    if config.classes and (train_y is None or train_y.shape != (len(train_x),)
                           or not 0 <= train_y.min() <= train_y.max() < config.classes):
        raise ValueError(f"a conditional model needs one label in 0..{config.classes - 1} "
                         "per training row")

    torch.manual_seed(config.seed)  # initial weights; a resumed run restores its RNG below
    g, d = build_networks(config)
    if config.image_data:
        g.init_output_bias_from_marginals(train_x)
    g, d = g.to(device), d.to(device)
    opt_g, opt_d = make_optimizer(config, g.parameters()), make_optimizer(config, d.parameters())
    step, seconds_before = 0, 0.0
    state = start_run(out, config, resume)
    if state is not None:
        step, seconds_before = restore_checkpoint(state, g, d, opt_g, opt_d)

    x_all = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32)).to(device)
    c_all = (one_hot(torch.from_numpy(train_y), config.classes).to(device) if config.classes
             else None)
    per_epoch = iterations_per_epoch(config, len(x_all))
    batches = config.k if config.update_scheme == "alternating" else 1
    fixed_z = sample_noise(N_FIXED_SAMPLES[config.image_data], config,
                           generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
    fixed = fixed_condition(config, x_all)
    started = time.perf_counter()
    window: dict[str, list[float]] = {}
    interrupted = False

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    with stop_on_signal() as flag, metrics_writer(out) as log:
        while step < config.epochs * per_epoch and not interrupted:
            epoch = step // per_epoch + 1
            order = epoch_order(config, epoch, len(x_all)).to(device)
            momentum = momentum_at(epoch, config.momentum_start, config.momentum_end,
                                   config.momentum_ramp_epochs)
            epoch_started, epoch_first_step = time.perf_counter(), step
            bar = tqdm(range(step % per_epoch, per_epoch), initial=step % per_epoch,
                       total=per_epoch, desc=f"epoch {epoch}/{config.epochs}",
                       disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 30,
                       leave=False)
            for i in bar:
                lr = learning_rate(step, config.lr, config.lr_decay, config.lr_min,
                                   config.lr_drops, config.lr_drop_factor)
                for opt in (opt_g, opt_d):
                    set_hyperparameters(opt, lr, momentum)
                rows = order[i * batches * config.batch_size:(i + 1) * batches * config.batch_size]
                # an inpainting model's masks: a function of (seed, step), so a resumed run
                # draws the same ones
                masks_rng = np.random.default_rng([config.seed, step])
                real = [make_batch(config, x_all[part], None if c_all is None else c_all[part],
                                   masks_rng) for part in rows.split(config.batch_size)]
                if config.update_scheme == "alternating":
                    stats = alternating_iteration(g, d, opt_g, opt_d, real, config)
                else:
                    stats = simultaneous_iteration(g, d, opt_g, opt_d, real[0], config)
                step += 1
                if not all(math.isfinite(v) for v in stats.values()):
                    raise TrainingDiverged(step, stats)
                for key, value in stats.items():
                    window.setdefault(key, []).append(value)
                if step % config.log_every == 0:
                    line = {key: float(np.mean(v)) for key, v in window.items()}
                    line.update(step=step, epoch=epoch, lr=lr, momentum=momentum,
                                seconds=round(elapsed(), 3))
                    log(line)
                    window.clear()
                    bar.set_postfix(d_loss=f"{line['d_loss']:.3f}", g_loss=f"{line['g_loss']:.3f}",
                                    D_x=f"{line['d_real']:.2f}", D_Gz=f"{line['d_fake']:.2f}",
                                    refresh=False)  # the bar redraws at its own pace
                if flag["stop"] or (max_steps is not None and step >= max_steps):
                    interrupted = True
                    break
            bar.close()
            if not interrupted:
                iters = step - epoch_first_step
                seconds_per_iter = (time.perf_counter() - epoch_started) / max(iters, 1)
                log({"event": "epoch", "epoch": epoch, "step": step,
                     "seconds": round(elapsed(), 3), "device": str(device),
                     "seconds_per_iteration": seconds_per_iter})
                save_samples(sample_file(out, epoch), g, fixed_z, fixed, config,
                             f"epoch {epoch}")
                if config.snapshot_every and epoch % config.snapshot_every == 0:
                    save_snapshots(out, epoch, {"generator": g, "discriminator": d})
                if progress:
                    print(f"epoch {epoch}/{config.epochs}: {seconds_per_iter * 1e3:.1f} "
                          f"ms/iteration, D(x) {stats['d_real']:.3f}, "
                          f"D(G(z)) {stats['d_fake']:.3f}", file=sys.stderr)
            save_checkpoint(out / CHECKPOINT, g, d, opt_g, opt_d, config, step, elapsed())
    return RunResult(out, step, step // per_epoch, interrupted, elapsed())
