"""A run folder: what training writes where, and the one reader and writer of each file.

    config.json                                        the resolved TrainConfig
    checkpoint.pt                                      everything needed to resume: nets,
                                                       optimisers, RNG state, step (written
                                                       every epoch and on Ctrl-C)
    metrics.jsonl                                      one JSON object a line: training
                                                       metrics every `log_every` iterations,
                                                       and an {"event": "epoch"} line per epoch
    samples/epoch-NNNN.png                             G's samples on fixed noise
    snapshots/{generator,discriminator}-epoch-NNNN.pt  every `snapshot_every` epochs
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from training.config import JsonConfig, TrainConfig

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SNAPSHOTS = "snapshots"
SNAPSHOT = re.compile(r"generator-epoch-(\d+)\.pt$")  # a run's snapshots/ G files


def load_config(run: Path) -> TrainConfig:
    return TrainConfig.load(run / CONFIG)


def iterations_per_epoch(config: TrainConfig, n_train: int) -> int:
    """An epoch is as many iterations (k D batches each, alternating) as n_train fills."""
    batches_per_iteration = config.k if config.update_scheme == "alternating" else 1
    per_epoch = n_train // (config.batch_size * batches_per_iteration)
    if per_epoch < 1:
        raise ValueError(f"{n_train} training points cannot fill one iteration of "
                         f"{batches_per_iteration} batch(es) of {config.batch_size}")
    return per_epoch


def sample_file(run: Path, epoch: int) -> Path:
    return run / "samples" / f"epoch-{epoch:04d}.png"


def snapshot_file(run: Path, net: str, epoch: int) -> Path:
    """run/snapshots/{generator,discriminator}-epoch-NNNN.pt"""
    return run / SNAPSHOTS / f"{net}-epoch-{epoch:04d}.pt"


def save_snapshots(run: Path, epoch: int, nets: dict[str, torch.nn.Module]) -> None:
    """Each net's state dict as snapshots/{name}-epoch-NNNN.pt."""
    (run / SNAPSHOTS).mkdir(exist_ok=True)
    for net, module in nets.items():
        torch.save(module.state_dict(), snapshot_file(run, net, epoch))


def generator_snapshots(run: Path, with_discriminator: bool = False) -> dict[int, Path]:
    """The run's G snapshots by epoch, in epoch order (only those with a D snapshot of the
    same epoch, if asked)."""
    found = {int(m.group(1)): f for f in (run / SNAPSHOTS).glob("generator-epoch-*.pt")
             if (m := SNAPSHOT.search(f.name))}
    return {epoch: found[epoch] for epoch in sorted(found)
            if not with_discriminator or snapshot_file(run, "discriminator", epoch).is_file()}


def save_checkpoint(path: Path, g: torch.nn.Module, d: torch.nn.Module,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    config: TrainConfig, step: int, seconds: float) -> None:
    state = {
        "generator": g.state_dict(),
        "discriminator": d.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "step": step,
        "seconds": seconds,
        "device": str(next(g.parameters()).device),
        "config": config.to_dict(),
        "torch": torch.__version__,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a broken checkpoint


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume")
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_checkpoint(state: dict, g: torch.nn.Module, d: torch.nn.Module,
                       opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer
                       ) -> tuple[int, float]:
    """Put a checkpoint's nets, optimisers and RNG state back; (step, seconds) it reached."""
    g.load_state_dict(state["generator"])
    d.load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state["step"], state["seconds"]


def check_schedule_kept(saved: TrainConfig, config: TrainConfig, step: int) -> None:
    """A resumed run may add lr drops ahead of its checkpoint, never rewrite its past."""
    past = [d for d in saved.lr_drops if d < step]
    if [d for d in config.lr_drops if d < step] != past or (
            past and config.lr_drop_factor != saved.lr_drop_factor):
        raise ValueError(f"lr_drops before iteration {step} (the checkpoint) and lr_drop_factor "
                         f"are the run's history: {list(saved.lr_drops)} x "
                         f"{saved.lr_drop_factor} cannot become {list(config.lr_drops)} x "
                         f"{config.lr_drop_factor}")


def start_run(run: Path, config: TrainConfig | JsonConfig, resume: bool) -> dict | None:
    """Ready `run` for training with `config` (a GAN's or any other trainer's) and save the
    config: the checkpoint to resume from (metric lines written after it dropped), or None
    for a new run, refusing a folder that already holds one."""
    state = None
    if resume:
        state = load_checkpoint(run / CHECKPOINT)
        if isinstance(config, TrainConfig):
            check_schedule_kept(TrainConfig.from_dict(state["config"]), config, state["step"])
        kept = [m for m in read_metrics(run) if m.get("step", 0) <= state["step"]]
        (run / METRICS).write_text("".join(json.dumps(m) + "\n" for m in kept))
    else:
        if (run / CHECKPOINT).exists():
            raise FileExistsError(f"{run} already holds a run: pass --resume to continue it, "
                                  "or choose another --out")
        (run / METRICS).unlink(missing_ok=True)
    config.save(run / CONFIG)
    return state


@contextmanager
def metrics_writer(run: Path) -> Iterator[Callable[[dict], None]]:
    """A function that appends one record to metrics.jsonl (flushed: a crash loses none)."""
    with open(run / METRICS, "a") as f:
        def write(record: dict) -> None:
            f.write(json.dumps(record) + "\n")
            f.flush()

        yield write


def read_metrics(run: Path) -> list[dict]:
    """Every record of run/metrics.jsonl, in order ([] before the first is written)."""
    path = run / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_metrics(run: Path) -> list[dict]:
    """The records of training metrics (losses, D's outputs, lr ...), not the epoch events."""
    return [m for m in read_metrics(run) if "event" not in m]


def epoch_record(run: Path, epoch: int) -> dict:
    """The record that closed `epoch` (step, seconds, device); {} if there is none."""
    return next((m for m in read_metrics(run)
                 if m.get("event") == "epoch" and m["epoch"] == epoch), {})
