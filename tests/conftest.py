from __future__ import annotations

import os
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
    from training.data import load_mnist
    from training.train import train

    out = tmp_path_factory.mktemp("tiny-mnist-run")
    config = with_overrides(preset("mnist-paper"), TINY_MNIST)
    train(config, out, data=load_mnist(mnist_dir).train.images[:2000], progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_mnist_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding one small exported model, `tiny`."""
    from training.export import export_model

    models = tmp_path_factory.mktemp("models")
    export_model(tiny_mnist_run, "tiny", models_dir=models, epoch=2, run_evaluation=False)
    return models
