from __future__ import annotations

import pytest
import torch

from training.gan.optim import ClassicMomentumSGD, learning_rate, momentum_at, set_hyperparameters


def test_classic_momentum_update_by_hand() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = ClassicMomentumSGD([p], lr=0.1, momentum=0.5)
    p.grad = torch.tensor([2.0])
    opt.step()  # v = -0.2, p = 0.8
    assert p.item() == pytest.approx(0.8)
    set_hyperparameters(opt, lr=0.05, momentum=0.7)
    p.grad = torch.tensor([1.0])
    opt.step()  # v = 0.7 * -0.2 - 0.05 * 1 = -0.19, p = 0.61
    assert p.item() == pytest.approx(0.61)


def test_learning_rate_decays_per_iteration_with_a_floor() -> None:
    assert learning_rate(0, 0.1, 1.000004, 1e-6) == 0.1
    assert learning_rate(1000, 0.1, 1.000004, 1e-6) == pytest.approx(0.1 / 1.000004**1000)
    assert learning_rate(10**8, 0.1, 1.000004, 1e-6) == 1e-6


def test_learning_rate_drops_from_each_listed_iteration_on() -> None:
    drops = (100, 300)
    assert learning_rate(99, 0.1, 1.0, 0.0, drops, 0.1) == 0.1
    assert learning_rate(100, 0.1, 1.0, 0.0, drops, 0.1) == pytest.approx(0.01)
    assert learning_rate(299, 0.1, 1.0, 0.0, drops, 0.1) == pytest.approx(0.01)
    assert learning_rate(300, 0.1, 1.0, 0.0, drops, 0.1) == pytest.approx(0.001)
    # on top of the per-step decay, and still floored
    assert learning_rate(200, 0.1, 1.000004, 0.0, drops, 0.1) == pytest.approx(
        0.01 / 1.000004**200)
    assert learning_rate(300, 0.1, 1.0, 0.005, drops, 0.1) == 0.005


def test_momentum_ramps_linearly_from_epoch_1_to_250() -> None:
    ramp = (1, 250)
    assert momentum_at(1, 0.5, 0.7, ramp) == 0.5
    assert momentum_at(250, 0.5, 0.7, ramp) == pytest.approx(0.7)
    assert momentum_at(400, 0.5, 0.7, ramp) == pytest.approx(0.7)
    assert momentum_at(125.5, 0.5, 0.7, ramp) == pytest.approx(0.6)
