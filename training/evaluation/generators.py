"""Any generator behind one interface: a run folder, a training checkpoint, a generator
snapshot, a `generator.onnx`, or a model folder with `model.json`. What is served is what is
measured: latents follow the seed contract (`service/contract/card.py`, `Latent.sample`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.contract.card import CARD_FILE, Latent, read_card
from training.config import TrainConfig
from training.gan.networks import SQRT3, build_networks, latent_prior
from training.onnx_io import cpu_session, run_batched
from training.runs import CHECKPOINT, CONFIG


@dataclass
class GeneratorSource:
    """A generator behind one function: latents (n, dim) float32 -> images (n, 784)."""

    description: str
    latent: Latent
    generate: Callable[[np.ndarray], np.ndarray]

    def latents(self, n: int, seed: int) -> np.ndarray:
        return self.latent.sample(n, seed)

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.images(self.latents(n, seed))

    def images(self, z: np.ndarray) -> np.ndarray:
        parts = [self.generate(z[i:i + 1000]) for i in range(0, len(z), 1000)]
        x = np.concatenate(parts).reshape(len(z), -1).astype(np.float32)
        if not np.isfinite(x).all():  # a diverged generator: nothing below would mean anything
            raise ValueError(f"{self.description} produces non-finite images")
        return x


def torch_source(state: dict, config: TrainConfig, description: str) -> GeneratorSource:
    """G of `config` with the weights `state`."""
    if not config.image_data:
        raise ValueError(f"{description} is a {config.dataset} generator, not an MNIST one")
    g, _ = build_networks(config)
    g.load_state_dict(state)
    g.eval()

    def generate(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return g(torch.from_numpy(z)).numpy()

    return GeneratorSource(description, latent_prior(config), generate)


def onnx_source(path: Path, latent: Latent | None = None,
                description: str | None = None) -> GeneratorSource:
    """An exported generator; without `latent` (a bare file), the paper's prior sized
    from the graph."""
    session = cpu_session(path)
    if latent is None:
        latent = Latent(int(session.get_inputs()[0].shape[1]), "uniform", -SQRT3, SQRT3)
    return GeneratorSource(description or str(path), latent,
                           lambda z: run_batched(session, z)[0])


def load_generator(path: str | Path) -> GeneratorSource:
    """Any of the accepted PATH forms (see module doc) as a GeneratorSource."""
    p = Path(path)
    if p.is_dir():
        if (p / CARD_FILE).is_file():
            card = read_card(p)
            return onnx_source(p / card.generator.file, card.latent)
        if (p / CHECKPOINT).is_file():
            return load_generator(p / CHECKPOINT)
        raise FileNotFoundError(f"{p} holds neither {CARD_FILE} nor {CHECKPOINT}")
    if not p.is_file():
        raise FileNotFoundError(f"no generator at {p}")
    if p.suffix == ".onnx":  # with the card beside it, if there is one
        has_card = (p.parent / CARD_FILE).is_file()
        return onnx_source(p, read_card(p.parent).latent if has_card else None)
    state = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "generator" in state and "config" in state:
        return torch_source(state["generator"], TrainConfig.from_dict(state["config"]), str(p))
    config_path = p.parent.parent / CONFIG  # run/snapshots/generator-epoch-N.pt
    if not config_path.is_file():
        raise FileNotFoundError(f"{p} is a bare generator state; its run's {CONFIG} was "
                                f"expected at {config_path}")
    return torch_source(state, TrainConfig.load(config_path), str(p))
