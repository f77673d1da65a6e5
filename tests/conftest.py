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
