from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import TINY_MNIST

# TINY_MNIST with the digit label given to G and D (§7.1): seconds, not hours
TINY_CONDITIONAL = {**TINY_MNIST, "classes": 10}


@pytest.fixture(scope="session")
def tiny_conditional_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch conditional run on 2,000 labelled images, with G and D
    snapshots of both epochs."""
    from training.config import preset, with_overrides
    from training.data.mnist import load_mnist
    from training.gan.train import train

    out = tmp_path_factory.mktemp("tiny-conditional-run")
    config = with_overrides(preset("mnist-conditional"), TINY_CONDITIONAL)
    train_split = load_mnist(mnist_dir).train
    train(config, out, data=train_split.images[:2000], labels=train_split.labels[:2000],
          progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_conditional_model(tiny_conditional_run: Path,
                           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny conditional run's epoch-2 G and D exported (no evaluation) as `cond`."""
    from training.release.export import export_model

    models = tmp_path_factory.mktemp("conditional-models")
    return export_model(tiny_conditional_run, "cond", models_dir=models, epoch=2,
                        run_evaluation=False)
