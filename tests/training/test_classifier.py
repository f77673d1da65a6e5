"""The evaluation classifier (training/evaluation/mnist-classifier) is what its card says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.data.mnist import load_mnist
from training.evaluation.classifier import DEFAULT_DIR, classify, load_classifier, predict


def test_shipped_classifier_accuracy_matches_its_card(mnist_dir: Path) -> None:
    card = json.loads((DEFAULT_DIR / "model.json").read_text())
    session = load_classifier()
    test = load_mnist(mnist_dir).test
    accuracy = float((predict(session, test.images) == test.labels).mean())
    assert accuracy >= 0.985
    assert accuracy == pytest.approx(card["accuracy"]["test"], abs=1e-4)
    logits, features = classify(session, test.images[:5])
    assert logits.shape == (5, 10) and features.shape == (5, card["training"]["config"][
        "feature_dim"])


def test_a_classifier_file_that_is_not_the_cards_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mnist-classifier"
    shutil.copytree(DEFAULT_DIR, folder)
    raw = bytearray((folder / "classifier.onnx").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "classifier.onnx").write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="does not match the sha256"):
        load_classifier(folder)
