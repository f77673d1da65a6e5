"""Uniform weight averaging of a run's snapshots: Polyak averaging done after training.

The average of G's weights over a window of high-lr snapshots is a better generator than
any single snapshot of the run (docs/reproduction.md: validation Parzen 236.4 for epochs
200-600 against 207.1 at epoch 600), with the same architecture, so it exports and serves
like any other. D is not averaged: the window's last D separates validation images from the
averaged G's samples better than the averaged D does (AUC 0.671 against 0.621), and scoring
images is what the service uses D for. Yazici et al. (2019), "The Unusual Effectiveness of
Averaging in GAN Training", study averaging G.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from training.runs import SNAPSHOTS, generator_snapshots, snapshot_file

WINDOW = re.compile(r"(\d+):(\d+)")


def average_states(states: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts with the same keys and shapes (float64 sums, so the
    order of the states does not matter to the last bit of float32)."""
    total: dict[str, torch.Tensor] = {}
    count = 0
    for state in states:
        if count and set(state) != set(total):
            raise ValueError(f"state {count} has keys {sorted(state)}, expected {sorted(total)}")
        for key, value in state.items():
            if count and value.shape != total[key].shape:
                raise ValueError(f"state {count}: {key} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(total[key].shape)}")
            total[key] = total[key] + value.double() if count else value.double().clone()
        count += 1
    if not count:
        raise ValueError("nothing to average: no states given")
    return {key: (value / count).float() for key, value in total.items()}


def parse_windows(text: str) -> list[tuple[int, int]]:
    """"200:600,300:600" -> [(200, 600), (300, 600)]: inclusive epoch ranges."""
    windows = []
    for part in text.split(","):
        m = WINDOW.fullmatch(part.strip())
        if not m:
            raise ValueError(f"window {part!r}: write FIRST:LAST epochs, e.g. 200:600")
        first, last = int(m.group(1)), int(m.group(2))
        if first > last:
            raise ValueError(f"window {part!r}: FIRST ({first}) is after LAST ({last})")
        windows.append((first, last))
    return windows


def window_epochs(run: Path, first: int, last: int) -> list[int]:
    """Epochs in [first, last] with both a G and a D snapshot in `run`."""
    epochs = [e for e in generator_snapshots(run, with_discriminator=True) if first <= e <= last]
    if not epochs:
        raise FileNotFoundError(f"{run / SNAPSHOTS} holds no G and D snapshot pair for "
                                f"epochs {first}-{last}")
    return epochs


def average_generator(run: Path, first: int, last: int
                      ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """(G's state averaged over the snapshots of [first, last], the epochs averaged)."""
    epochs = window_epochs(run, first, last)
    states = (torch.load(snapshot_file(run, "generator", e), map_location="cpu")
              for e in epochs)  # one snapshot in memory at a time
    return average_states(states), epochs
