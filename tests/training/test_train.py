from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.__main__ import main
from training.config import TrainConfig, preset, with_overrides
from training.data.toy import mode_coverage, ring_8
from training.gan.networks import build_networks, sample_noise
from training.gan.optim import make_optimizer
from training.gan.train import Batch, alternating_iteration, simultaneous_iteration, train
from training.runs import CHECKPOINT, METRICS, iterations_per_epoch, load_checkpoint, read_metrics

REPO = Path(__file__).resolve().parents[2]


def tiny(**overrides: object) -> TrainConfig:
    """A few-second run on the ring: small nets, paper SGD, dropout on."""
    values = dict(toy_size=2_000, g_hidden=(32,), d_units=(16,), d_pieces=3, batch_size=50,
                  epochs=3, optimizer="sgd", lr=0.05, lr_decay=1.0001, d_input_keep=0.8,
                  d_hidden_keep=0.5, log_every=10, snapshot_every=2)
    values.update(overrides)
    return with_overrides(preset("toy-ring"), values)


def params(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run / CHECKPOINT)
    return {**{f"g.{k}": v for k, v in state["generator"].items()},
            **{f"d.{k}": v for k, v in state["discriminator"].items()},
            **{f"opt_d.{k}": v["velocity"] for k, v in state["opt_d"]["state"].items()}}


@pytest.mark.parametrize("overrides", [
    {},
    {"update_scheme": "simultaneous", "g_loss": "minimax"},
    {"k": 2},
])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path,
                                                                 overrides: dict) -> None:
    config = tiny(**overrides)
    whole = train(config, tmp_path / "whole", progress=False)
    per_epoch = iterations_per_epoch(config, config.toy_size)
    stop_at = per_epoch + per_epoch // 2  # mid-epoch, as a Ctrl-C would
    first = train(config, tmp_path / "split", max_steps=stop_at, progress=False)
    assert first.interrupted and first.step == stop_at
    second = train(config, tmp_path / "split", resume=True, progress=False)
    assert not second.interrupted and second.step == whole.step == 3 * per_epoch
    a, b = params(tmp_path / "whole"), params(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # the metric log of the resumed run is the same sequence of steps, none repeated
    steps = [m["step"] for m in read_metrics(tmp_path / "split")]
    assert steps == [m["step"] for m in read_metrics(tmp_path / "whole")]


def test_run_folder_contents(tmp_path: Path) -> None:
    config = tiny()
    train(config, tmp_path, progress=False)
    assert TrainConfig.load(tmp_path / "config.json") == config
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "discriminator-epoch-0002.pt", "generator-epoch-0002.pt"]
    lines = read_metrics(tmp_path)
    train_lines = [line for line in lines if "event" not in line]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "lr", "momentum", "step"} <= set(
        train_lines[0])
    assert [line["epoch"] for line in lines if line.get("event") == "epoch"] == [1, 2, 3]
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["config"] == config.to_dict() and state["step"] == 3 * 40


def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    train(tiny(epochs=1), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(epochs=1), tmp_path, progress=False)


def test_ring_of_8_gaussians_mode_coverage(tmp_path: Path) -> None:
    """A short CPU run of the `toy-ring` preset covers at least 6 of the 8 modes (a mode
    counts with >= 1% of 10,000 samples within 3 std of it; VEEGAN reports 6.3 for a GAN)."""
    config = preset("toy-ring")
    train(config, tmp_path, progress=False)
    g, _ = build_networks(config)
    g.load_state_dict(load_checkpoint(tmp_path / CHECKPOINT)["generator"])
    with torch.no_grad():
        samples = g(sample_noise(10_000, config, generator=torch.Generator().manual_seed(1)))
    coverage = mode_coverage(samples.numpy(), ring_8(std=config.toy_std))
    assert coverage.modes_covered >= 6, coverage


@pytest.mark.parametrize("scheme", ["alternating", "simultaneous"])
def test_d_loss_scale_scales_d_steps_and_logs_d_loss_unscaled(scheme: str) -> None:
    """From zero velocity an SGD step is -lr * grad, so D moves exactly `d_loss_scale` times
    as far; the logged d_loss stays -V (unscaled) so runs compare."""
    x = torch.from_numpy(ring_8().sample(50, np.random.default_rng(0)).astype(np.float32))
    moves, stats = {}, {}
    for scale in (1.0, 0.5):
        config = tiny(update_scheme=scheme, d_loss_scale=scale)
        torch.manual_seed(0)
        g, d = build_networks(config)
        before = [p.detach().clone() for p in d.parameters()]
        opt_g = make_optimizer(config, g.parameters())
        opt_d = make_optimizer(config, d.parameters())
        torch.manual_seed(1)  # the same noise and dropout masks for both scales
        if scheme == "alternating":
            stats[scale] = alternating_iteration(g, d, opt_g, opt_d, [Batch(x)], config)
        else:
            stats[scale] = simultaneous_iteration(g, d, opt_g, opt_d, Batch(x), config)
        moves[scale] = [p.detach() - b for p, b in zip(d.parameters(), before, strict=True)]
    for full, half in zip(moves[1.0], moves[0.5], strict=True):
        torch.testing.assert_close(half, 0.5 * full, rtol=1e-4, atol=1e-7)  # float32 rounding
    assert max(m.abs().max() for m in moves[1.0]) > 1e-3  # far above that rounding
    assert stats[0.5]["d_loss"] == pytest.approx(stats[1.0]["d_loss"], rel=1e-6)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_d_loss_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="d_loss_scale must be > 0"):
        tiny(d_loss_scale=scale)


def test_mode_coverage_counts_by_the_protocol() -> None:
    ring = ring_8()
    rng = np.random.default_rng(0)
    on_three = ring.centers[[0, 0, 1, 5]].repeat(250, axis=0) + rng.normal(0, 0.02, (1000, 2))
    result = mode_coverage(on_three, ring)
    assert result.modes_covered == 3 and result.high_quality > 0.98
    far = np.zeros((100, 2))  # the centre of the ring is 2 away from every mode
    assert mode_coverage(far, ring).modes_covered == 0


def test_mnist_paper_networks_train_on_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    """The real pipeline end to end for a few iterations: data, paper nets, PNG grid."""
    config = with_overrides(preset("mnist-paper"), {"epochs": 1, "log_every": 5})
    result = train(config, tmp_path, data_dir=mnist_dir, max_steps=10, progress=False)
    assert result.step == 10
    first = read_metrics(tmp_path)[0]
    assert 0 < first["d_real"] < 1 and first["lr"] == pytest.approx(0.1 / 1.000004**4)


def test_cli_resume_keeps_the_config(tmp_path: Path) -> None:
    args = ["train", "--preset", "toy-ring", "--out", str(tmp_path), "--no-progress",
            "--epochs", "1", "--toy-size", "1000", "--g-hidden", "16,16"]
    assert main(args + ["--max-steps", "2"]) == 0
    assert TrainConfig.load(tmp_path / "config.json").g_hidden == (16, 16)
    with pytest.raises(SystemExit, match="only .*may change"):
        main(["train", "--out", str(tmp_path), "--resume", "--lr", "1"])
    assert main(["train", "--out", str(tmp_path), "--resume", "--epochs", "2",
                 "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 2 * (1000 // 256)


def test_resume_may_add_lr_drops_ahead_but_not_rewrite_the_past(tmp_path: Path) -> None:
    """Adding a drop at the checkpoint on resume equals a run planned with it from the start."""
    config = tiny(epochs=2)
    per_epoch = iterations_per_epoch(config, config.toy_size)
    planned = with_overrides(config, {"lr_drops": (per_epoch,), "lr_drop_factor": 0.2})
    train(planned, tmp_path / "planned", progress=False)
    train(config, tmp_path / "added", max_steps=per_epoch, progress=False)
    train(planned, tmp_path / "added", resume=True, progress=False)
    a, b = params(tmp_path / "planned"), params(tmp_path / "added")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    lrs = [m["lr"] for m in read_metrics(tmp_path / "added") if "lr" in m]
    assert lrs[-1] == pytest.approx(0.2 * config.lr / config.lr_decay**(2 * per_epoch - 1))
    with pytest.raises(ValueError, match="lr_drops before iteration"):
        train(with_overrides(planned, {"lr_drops": (1,), "epochs": 3}), tmp_path / "added",
              resume=True, progress=False)
    with pytest.raises(ValueError, match="lr_drops before iteration"):
        train(with_overrides(planned, {"lr_drop_factor": 0.5, "epochs": 3}),
              tmp_path / "added", resume=True, progress=False)


def test_cli_reports_bad_values_without_a_traceback(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--out", str(tmp_path), "--k", "0"]) == 2
    assert "k must be >= 1" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "train", "--preset", "toy-ring", "--out",
         str(tmp_path), "--epochs", "1000", "--log-every", "1", "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # wait until training is under way (metrics appear), then interrupt
    while not ((tmp_path / METRICS).exists() and (tmp_path / METRICS).stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["step"] >= 1


def test_cuda_asked_for_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the error path cannot be reached")
    from training.gan.train import pick_device

    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none here")
def test_training_runs_and_resumes_on_cuda(tmp_path: Path) -> None:
    config = tiny(device="cuda")
    whole = train(config, tmp_path / "whole", progress=False)
    train(config, tmp_path / "split", max_steps=50, progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "whole" / CHECKPOINT)["device"].startswith("cuda")
    a, b = params(tmp_path / "whole"), params(tmp_path / "split")
    for key in a:  # cuBLAS may reorder sums between runs: equal up to float rounding
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert whole.step == 3 * iterations_per_epoch(config, config.toy_size)


def test_figure1_command_draws_the_four_stages(tmp_path: Path) -> None:
    from PIL import Image

    from training.experiments.figure1 import make_figure1

    path = make_figure1(tmp_path / "figure1.png", early_steps=5, d_steps=5, g_steps=2,
                        late_steps=5)
    with Image.open(path) as image:
        assert image.size == (1600, 380)


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_its_checkpoint(
        tmp_path: Path) -> None:
    from training.gan.train import TrainingDiverged

    config = tiny(lr=1e30, lr_decay=1.0)  # absurd steps: the weights overflow at once
    with pytest.raises(TrainingDiverged, match="diverged at iteration"):
        train(config, tmp_path, progress=False)
    assert not (tmp_path / CHECKPOINT).exists()  # nothing non-finite was saved
