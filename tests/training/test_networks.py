from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.config import preset
from training.gan.networks import Discriminator, Generator, Maxout, build_networks, sample_noise


def test_maxout_takes_the_max_over_each_units_pieces() -> None:
    layer = Maxout(3, units=2, pieces=4)
    x = torch.randn(5, 3)
    pre = x @ layer.linear.weight.T + layer.linear.bias
    expected = torch.stack([pre[:, 0:4].max(1).values, pre[:, 4:8].max(1).values], dim=1)
    torch.testing.assert_close(layer(x), expected)


def test_paper_networks_have_the_paper_sizes_and_init() -> None:
    config = preset("mnist-paper")
    g, d = build_networks(config)
    linears = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (100, 1200), (1200, 1200), (1200, 784)]
    assert all(m.weight.abs().max() <= 0.05 for m in linears)
    assert all(m.weight.abs().max() > 0.049 for m in linears)  # U(-0.05, 0.05), not smaller
    maxouts = [m for m in d.modules() if isinstance(m, Maxout)]
    assert [(m.units, m.pieces, m.linear.in_features) for m in maxouts] == [
        (240, 5, 784), (240, 5, 240)]
    d_linears = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert all(m.weight.abs().max() <= 0.005 for m in d_linears)
    drop = [m.p for m in d.modules() if isinstance(m, torch.nn.Dropout)]
    assert drop == pytest.approx([0.2, 0.5, 0.5])  # keep 0.8 (x1.25), then keep 0.5 (x2)


def test_generator_output_shape_range_and_marginal_bias() -> None:
    g = Generator(10, (16,), 784, sigmoid_output=True, init_range=0.05)
    data = np.random.default_rng(0).uniform(0, 1, (50, 784)).astype(np.float32)
    data[:, 0] = 0.0  # an always-black pixel: logit of the clipped mean, 1e-7
    g.init_output_bias_from_marginals(data)
    mean = np.clip(data.astype(np.float64).mean(0), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(g.out.bias.detach().numpy(), np.log(mean / (1 - mean)),
                               rtol=1e-6, atol=1e-6)
    assert g.out.bias[0].item() == pytest.approx(math.log(1e-7), rel=1e-5)
    x = g(torch.randn(7, 10))
    assert x.shape == (7, 784) and x.min() >= 0 and x.max() <= 1


def test_discriminator_dropout_is_on_in_training_and_off_in_eval() -> None:
    d = Discriminator(20, (8,), 3, input_keep=0.8, hidden_keep=0.5, init_range=0.5)
    x = torch.randn(4, 20)
    d.eval()
    torch.testing.assert_close(d(x), d(x))
    d.train()
    torch.manual_seed(0)
    assert not torch.equal(d(x), d(x))
    assert d(x).shape == (4, 1)


@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_noise_has_unit_variance(noise: str) -> None:
    config = preset("mnist-paper")
    config.noise = noise
    z = sample_noise(20_000, config, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20_000, 100)
    assert z.var().item() == pytest.approx(1.0, abs=0.01)
    if noise == "uniform":
        assert z.abs().max().item() <= math.sqrt(3)
