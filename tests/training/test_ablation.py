from __future__ import annotations

from pathlib import Path

import pytest

from training.experiments.ablation import ROWS, run_ablation

from ..conftest import TINY_MNIST


@pytest.mark.slow  # four runs and four evaluations: minutes on 2 cores
def test_ablation_trains_and_tabulates_every_row(mnist_dir: Path, tmp_path: Path) -> None:
    base = {**TINY_MNIST, "log_every": 100}
    table = run_ablation(tmp_path, epochs=1, data_dir=mnist_dir, base=base,
                         evaluation={"n_samples": 300, "seeds": (0,), "n_memorisation": 100,
                                     "progress": False})
    text = table.read_text()
    for label in ROWS:
        assert f"| {label} |" in text
        assert (tmp_path / label.replace(", ", "-") / "evaluation" / "report.json").is_file()
    assert len(text.strip().splitlines()) == 2 + len(ROWS)
    assert (tmp_path / "ablation_curves.png").is_file()
    # a second call resumes the finished runs instead of refusing their folders
    assert run_ablation(tmp_path, epochs=1, data_dir=mnist_dir, base=base,
                        evaluation={"n_samples": 300, "seeds": (0,), "n_memorisation": 100,
                                    "progress": False}).read_text() == text
