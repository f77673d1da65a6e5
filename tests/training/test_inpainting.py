"""§7.3's inpainting model in training: G completes only the hidden pixels, D reads the
mask, the masks are drawn per example, and an interrupted run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.config import preset, with_overrides
from training.gan.networks import build_networks, sample_noise
from training.gan.train import fixed_condition, make_batch, train
from training.runs import CHECKPOINT, iterations_per_epoch, load_checkpoint


def tiny_inpainting(**overrides: object):
    values = dict(g_hidden=(32,), d_units=(16,), d_pieces=2, batch_size=20, epochs=2,
                  log_every=5, snapshot_every=0)
    values.update(overrides)
    return with_overrides(preset("mnist-inpaint"), values)


def test_g_completes_only_the_hidden_pixels_and_d_reads_the_mask() -> None:
    config = tiny_inpainting()
    assert (config.g_cond_dim, config.d_cond_dim) == (2 * 784, 784)
    g, d = build_networks(config)
    x = torch.rand(6, 784)
    batch = make_batch(config, x, None, np.random.default_rng(0))
    hidden = batch.hidden.bool()
    assert 0 < hidden.float().mean() < 1
    # G sees the visible pixels and the mask, never the hidden pixels' values
    torch.testing.assert_close(batch.g_cond[:, :784], x * ~hidden)
    torch.testing.assert_close(batch.g_cond[:, 784:], hidden.float())
    fake = batch.fake(g, sample_noise(6, config))
    assert torch.equal(fake[~hidden], x[~hidden])  # visible pixels kept exactly
    assert not torch.allclose(fake[hidden], x[hidden])
    assert d(fake, batch.d_cond).shape == (6, 1)
    changed = x.clone()
    changed[hidden] = 1 - changed[hidden]  # what was hidden cannot change G's input
    again = make_batch(config, changed, None, np.random.default_rng(0))
    torch.testing.assert_close(again.g_cond, batch.g_cond)


def test_the_epoch_grid_shows_each_family_on_one_image_a_row() -> None:
    config = tiny_inpainting()
    x = torch.rand(100, 784)
    fixed = fixed_condition(config, x)
    assert fixed.x.shape == (100, 784)
    assert torch.equal(fixed.x[:10], x[0].expand(10, 784))  # row 0: image 0, ten times
    assert torch.equal(fixed.hidden[0], fixed.hidden[9])
    assert not torch.equal(fixed.hidden[0], fixed.hidden[10])  # row 1: another family


def test_an_interrupted_inpainting_run_resumes_exactly(tmp_path: Path) -> None:
    config = tiny_inpainting()
    data = np.random.default_rng(0).random((200, 784), dtype=np.float32)
    whole = train(config, tmp_path / "whole", data=data, progress=False)
    stop_at = iterations_per_epoch(config, len(data)) + 3
    first = train(config, tmp_path / "split", data=data, max_steps=stop_at, progress=False)
    assert first.interrupted
    second = train(config, tmp_path / "split", data=data, resume=True, progress=False)
    assert second.step == whole.step
    a, b = (load_checkpoint(tmp_path / run / CHECKPOINT) for run in ("whole", "split"))
    for net in ("generator", "discriminator"):
        for key in a[net]:
            torch.testing.assert_close(a[net][key], b[net][key], rtol=0, atol=0)
