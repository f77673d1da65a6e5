from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST IDX folder: $COUNTERFEIT_DATA_DIR, else ../shared/data/mnist."""
    folder = Path(os.environ.get("COUNTERFEIT_DATA_DIR") or REPO.parent / "shared/data/mnist")
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found in {folder}: run `make data` and set "
                    "COUNTERFEIT_DATA_DIR=data/mnist, or put ../shared/data/mnist beside the repo")
    return folder


# a small G and D on a 2,000-image slice of MNIST: seconds, not hours
TINY_MNIST = {"g_hidden": (32,), "d_units": (16,), "d_pieces": 2, "epochs": 2, "log_every": 10,
              "snapshot_every": 1}


@pytest.fixture(scope="session")
def tiny_mnist_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run folder with snapshots of both epochs."""
    from training.config import preset, with_overrides
    from training.data.mnist import load_mnist
    from training.gan.train import train

    out = tmp_path_factory.mktemp("tiny-mnist-run")
    config = with_overrides(preset("mnist-paper"), TINY_MNIST)
    train(config, out, data=load_mnist(mnist_dir).train.images[:2000], progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_mnist_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding one small exported model, `tiny`."""
    from training.release.export import export_model

    models = tmp_path_factory.mktemp("models")
    export_model(tiny_mnist_run, "tiny", models_dir=models, epoch=2, run_evaluation=False)
    return models


@pytest.fixture(scope="session")
def served_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with synthetic models built without torch (tests/service/
    synthetic_models.py: `tiny` grey 28 x 28, `rgb` 3 x 32 x 32 with a normal latent,
    `gonly` without D, `cond` class-conditional, `paint` inpainting) and the shipped
    `mnist-mlp`."""
    from tests.service.synthetic_models import build_models

    models = build_models(tmp_path_factory.mktemp("models"))
    (models / "mnist-mlp").symlink_to(REPO / "models" / "mnist-mlp")
    return models


@pytest.fixture(scope="session")
def client(served_models: Path) -> Iterator:
    """The service in this process on `served_models`, default model `tiny`. One per
    session: BentoML registers its metrics once per process."""
    from tests.in_process import serve_in_process

    with serve_in_process(served_models, default_model="tiny",
                          max_body_bytes=str(1024 * 1024)) as c:
        yield c
