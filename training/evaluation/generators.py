"""Any generator behind one interface: a run folder, a training checkpoint, a generator
snapshot, a `generator.onnx`, or a model folder with `model.json`. What is served is what is
measured: latents follow the seed contract (`service/contract/card.py`, `Latent.sample`).

A conditional G (§7.1, docs/conditional.md) takes a class label beside z. Its samples are
asked for with explicit labels (one class for all rows, or one per row), or, for measures of
the marginal p(x) (Parzen, FD, memorisation), with labels drawn from the training label
prior: from their own random stream, so z is the seed contract's whatever the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.contract.card import CARD_FILE, Conditioning, Latent, read_card
from training.config import TrainConfig
from training.data.mnist import TRAIN_LABEL_COUNTS
from training.gan.networks import SQRT3, build_networks, latent_prior
from training.onnx_io import cpu_session, run_batched
from training.runs import CHECKPOINT, CONFIG

# Labels of a seed come from default_rng([LABEL_STREAM, seed]), never from z's stream.
LABEL_STREAM = 1
Labels = int | np.ndarray | None  # one class for every row, one per row, or none


def training_label_prior(classes: int) -> np.ndarray:
    """p(c): the frequency of each digit among MNIST training images 0-49,999."""
    if classes != len(TRAIN_LABEL_COUNTS):
        raise ValueError(f"the label prior is MNIST's ({len(TRAIN_LABEL_COUNTS)} digits); "
                         f"this generator has {classes} classes")
    counts = np.asarray(TRAIN_LABEL_COUNTS, np.float64)
    return counts / counts.sum()


def prior_labels(n: int, seed: int, classes: int) -> np.ndarray:
    """(n,) int64 labels drawn i.i.d. from the training label prior, a function of seed."""
    rng = np.random.default_rng([LABEL_STREAM, seed])
    return rng.choice(classes, size=n, p=training_label_prior(classes)).astype(np.int64)


@dataclass
class GeneratorSource:
    """A generator behind one function: latents (n, dim) float32 and, for a conditional G,
    one-hot labels (n, classes) float32 (else None) -> images (n, 784)."""

    description: str
    latent: Latent
    generate: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    classes: int = 0  # 0: unconditional; else G(z, c) with c one of this many classes

    @property
    def conditional(self) -> bool:
        return self.classes > 0

    def latents(self, n: int, seed: int) -> np.ndarray:
        return self.latent.sample(n, seed)

    def labels(self, n: int, seed: int) -> np.ndarray | None:
        """Labels from the training label prior for a conditional G; None otherwise."""
        return prior_labels(n, seed, self.classes) if self.conditional else None

    def sample(self, n: int, seed: int, labels: Labels = None) -> np.ndarray:
        """G(z) on the seed's latents; a conditional G gets `labels`, or without them
        labels drawn from the training label prior with the same seed."""
        if labels is None:
            labels = self.labels(n, seed)
        return self.images(self.latents(n, seed), labels)

    def images(self, z: np.ndarray, labels: Labels = None) -> np.ndarray:
        c = self.one_hot(labels, len(z))
        parts = [self.generate(z[i:i + 1000], None if c is None else c[i:i + 1000])
                 for i in range(0, len(z), 1000)]
        x = np.concatenate(parts).reshape(len(z), -1).astype(np.float32)
        if not np.isfinite(x).all():  # a diverged generator: nothing below would mean anything
            raise ValueError(f"{self.description} produces non-finite images")
        return x

    def one_hot(self, labels: Labels, n: int) -> np.ndarray | None:
        """The (n, classes) float32 one-hot c that G reads; None for an unconditional G."""
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"{self.description} is unconditional: it takes no labels")
            return None
        if labels is None:
            raise ValueError(f"{self.description} is conditional: give one label per row")
        y = np.broadcast_to(np.asarray(labels), (n,))
        if not np.issubdtype(y.dtype, np.integer) or (n and not 0 <= y.min() <= y.max()
                                                      < self.classes):
            raise ValueError(f"labels must be integers in 0..{self.classes - 1}")
        c = np.zeros((n, self.classes), np.float32)
        c[np.arange(n), y] = 1.0
        return c


def torch_source(state: dict, config: TrainConfig, description: str) -> GeneratorSource:
    """G of `config` with the weights `state`."""
    if not config.image_data:
        raise ValueError(f"{description} is a {config.dataset} generator, not an MNIST one")
    g, _ = build_networks(config)
    g.load_state_dict(state)
    g.eval()

    def generate(z: np.ndarray, c: np.ndarray | None) -> np.ndarray:
        with torch.no_grad():
            return g(torch.from_numpy(z), None if c is None else torch.from_numpy(c)).numpy()

    return GeneratorSource(description, latent_prior(config), generate, config.classes)


def onnx_source(path: Path, latent: Latent | None = None, description: str | None = None,
                conditioning: Conditioning | None = None) -> GeneratorSource:
    """An exported generator; without `latent` (a bare file), the paper's prior sized
    from the graph. Its label input is the card's `conditioning`, else (a bare file) the
    graph's second input, if it has one."""
    session = cpu_session(path)
    inputs = session.get_inputs()
    if latent is None:
        latent = Latent(int(inputs[0].shape[1]), "uniform", -SQRT3, SQRT3)
    if conditioning is not None:
        label_input, classes = conditioning.input, conditioning.classes
    elif len(inputs) > 1:
        label_input, classes = inputs[1].name, int(inputs[1].shape[1])
    else:
        label_input, classes = None, 0

    def generate(z: np.ndarray, c: np.ndarray | None) -> np.ndarray:
        return run_batched(session, z, extra=None if c is None else {label_input: c})[0]

    return GeneratorSource(description or str(path), latent, generate, classes)


def load_generator(path: str | Path) -> GeneratorSource:
    """Any of the accepted PATH forms (see module doc) as a GeneratorSource."""
    p = Path(path)
    if p.is_dir():
        if (p / CARD_FILE).is_file():
            card = read_card(p)
            return onnx_source(p / card.generator.file, card.latent,
                               conditioning=card.conditioning)
        if (p / CHECKPOINT).is_file():
            return load_generator(p / CHECKPOINT)
        raise FileNotFoundError(f"{p} holds neither {CARD_FILE} nor {CHECKPOINT}")
    if not p.is_file():
        raise FileNotFoundError(f"no generator at {p}")
    if p.suffix == ".onnx":  # with the card beside it, if there is one
        if (p.parent / CARD_FILE).is_file():
            card = read_card(p.parent)
            return onnx_source(p, card.latent, conditioning=card.conditioning)
        return onnx_source(p)
    state = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "generator" in state and "config" in state:
        return torch_source(state["generator"], TrainConfig.from_dict(state["config"]), str(p))
    config_path = p.parent.parent / CONFIG  # run/snapshots/generator-epoch-N.pt
    if not config_path.is_file():
        raise FileNotFoundError(f"{p} is a bare generator state; its run's {CONFIG} was "
                                f"expected at {config_path}")
    return torch_source(state, TrainConfig.load(config_path), str(p))
