"""A run folder's files, read and written only through training.runs."""

from __future__ import annotations

import json
from pathlib import Path

from training.runs import (
    METRICS,
    epoch_record,
    generator_snapshots,
    read_metrics,
    snapshot_file,
    training_metrics,
)


def test_read_metrics_returns_the_lines(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == []  # nothing written yet
    records = [{"d_loss": 1.3, "step": 10, "epoch": 1},
               {"event": "epoch", "epoch": 1, "step": 20, "device": "cpu"}]
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    assert read_metrics(tmp_path) == records
    assert training_metrics(tmp_path) == records[:1]
    assert epoch_record(tmp_path, 1) == records[1]
    assert epoch_record(tmp_path, 2) == {}


def test_a_trained_run_through_its_readers(tiny_mnist_run: Path) -> None:
    lines = (tiny_mnist_run / METRICS).read_text().splitlines()
    assert read_metrics(tiny_mnist_run) == [json.loads(line) for line in lines]
    assert [m["epoch"] for m in read_metrics(tiny_mnist_run) if "event" in m] == [1, 2]
    assert all("d_loss" in m for m in training_metrics(tiny_mnist_run))
    assert epoch_record(tiny_mnist_run, 2)["step"] == 40
    assert generator_snapshots(tiny_mnist_run, with_discriminator=True) == {
        e: snapshot_file(tiny_mnist_run, "generator", e) for e in (1, 2)}
