"""A small CNN MNIST classifier: the feature extractor behind the classifier-based scores
(Frechet distance, mode coverage, Inception score). Trained on train 0-49,999 only, shipped
as ONNX (outputs `logits` and the penultimate `features`) with a card, read with
onnxruntime at evaluation time."""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from service.contract.card import sha256_file
from training.data.mnist import IMAGE_SHAPE, MNIST_SHA256, load_mnist
from training.onnx_io import OPSET, cpu_session, export_onnx, run_batched

DEFAULT_DIR = Path(__file__).resolve().parent / "mnist-classifier"  # not a served model


@dataclass
class ClassifierConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    feature_dim: int = 128
    seed: int = 0


class MnistCNN(nn.Module):
    def __init__(self, feature_dim: int = 128) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(0.25),
                                      nn.Linear(64 * 5 * 5, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(feature_dim, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, *IMAGE_SHAPE) in [0, 1] -> (logits (N, 10), features (N, feature_dim))."""
        features = self.features(self.conv(x))
        return self.head(features), features


def train_classifier(out_dir: Path = DEFAULT_DIR, config: ClassifierConfig | None = None,
                     data_dir: str | Path | None = None) -> dict:
    """Train, export `classifier.onnx` and write `model.json`; returns the card."""
    config = config or ClassifierConfig()
    torch.manual_seed(config.seed)
    mnist = load_mnist(data_dir)
    x = torch.from_numpy(mnist.train.images).view(-1, *IMAGE_SHAPE)
    y = torch.from_numpy(mnist.train.labels)
    model = MnistCNN(config.feature_dim)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(x))
        bar = tqdm(range(0, len(x), config.batch_size), desc=f"classifier epoch {epoch}")
        for start in bar:
            rows = order[start:start + config.batch_size]
            loss = F.cross_entropy(model(x[rows])[0], y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, torch.zeros(2, *IMAGE_SHAPE), out_dir / "classifier.onnx", "x",
                       ["logits", "features"])
    session = cpu_session(path)
    accuracy = {name: float((predict(session, split.images) == split.labels).mean())
                for name, split in (("valid", mnist.valid), ("test", mnist.test))}
    card = {
        "name": out_dir.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": "MNIST digit classifier used as the feature extractor of the evaluation",
        "files": {"classifier.onnx": {"sha256": sha256_file(path), "input": "x",
                                      "outputs": ["logits", "features"], "opset": OPSET}},
        "input": {"shape": list(IMAGE_SHAPE), "range": [0.0, 1.0]},
        "dataset": {"name": "mnist", "train": "training images 0-49,999",
                    "sha256": MNIST_SHA256},
        "training": {"config": asdict(config), "seconds": round(seconds, 1),
                     "device": "cpu", "torch": torch.__version__,
                     "command": "python -m training classifier"},
        "accuracy": accuracy,
    }
    (out_dir / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def load_classifier(model_dir: Path = DEFAULT_DIR):  # -> ort.InferenceSession
    """The shipped classifier, refusing a file whose sha256 is not the card's."""
    card = json.loads((model_dir / "model.json").read_text())
    path = model_dir / "classifier.onnx"
    expected = card["files"]["classifier.onnx"]["sha256"]
    if sha256_file(path) != expected:
        raise RuntimeError(f"{path} does not match the sha256 in {model_dir / 'model.json'}")
    return cpu_session(path)


def classify(session, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of images given as (n, 784) or (n, 28, 28) in [0, 1]."""
    x = np.asarray(images, np.float32).reshape(-1, *IMAGE_SHAPE)
    logits, features = run_batched(session, x)
    return logits, features


def predict(session, images: np.ndarray) -> np.ndarray:
    return classify(session, images)[0].argmax(axis=1)
