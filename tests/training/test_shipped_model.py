"""The shipped model, measured again by today's code: its full-size validation Parzen is the
one its card recorded when export selected it (validation images only; the test set is
evaluated once, at export, and not here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data.mnist import load_mnist
from training.evaluation.generators import load_generator
from training.release.select import validation_parzen

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "mnist-mlp"


def test_the_shipped_models_validation_parzen_is_the_one_recorded_at_export(
        mnist_dir: Path) -> None:
    card = json.loads((SHIPPED / "model.json").read_text())
    selection = card["export"]["selection"]
    first, last = selection["window"]
    recorded = selection["windows"][f"{first}:{last}"]["validation_parzen"]
    result = validation_parzen(load_generator(SHIPPED), load_mnist(mnist_dir))
    # recorded from the averaged G in torch; served from generator.onnx (parity <= 1e-5)
    assert result.ll == pytest.approx(recorded, abs=0.01)
    assert result.n_samples == 10_000
