"""The paper's optimiser: SGD with classic momentum, per-iteration lr decay and a linear
momentum ramp over epochs (pylearn2's Momentum, ExponentialDecay, MomentumAdjustor); Adam
for the toy presets."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from training.config import TrainConfig


class ClassicMomentumSGD(torch.optim.Optimizer):
    """v <- momentum * v - lr * grad; p <- p + v.

    torch.optim.SGD folds lr in after the velocity (v <- m v + g; p <- p - lr v), which
    differs from pylearn2's rule whenever lr changes, and here it changes every step.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"]
                v.mul_(group["momentum"]).add_(p.grad, alpha=-group["lr"])
                p.add_(v)


def learning_rate(step: int, lr: float, decay: float, lr_min: float,
                  drops: tuple[int, ...] = (), drop_factor: float = 1.0) -> float:
    """lr after `step` completed iterations: divided by `decay` each time, times
    `drop_factor` for each of `drops` already reached, floored at `lr_min`."""
    reached = sum(step >= drop for drop in drops)
    return max(lr * drop_factor**reached / decay**step, lr_min)


def momentum_at(epoch: int, start: float, end: float, ramp: tuple[int, int]) -> float:
    """Momentum during 1-based `epoch`: `start` up to ramp[0], linear to `end` at ramp[1]."""
    first, last = ramp
    if last <= first:
        return end if epoch >= last else start
    alpha = min(max((epoch - first) / (last - first), 0.0), 1.0)
    return start + alpha * (end - start)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "momentum" in group:
            group["momentum"] = momentum


def make_optimizer(config: TrainConfig, params: Iterable[torch.nn.Parameter]
                   ) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return ClassicMomentumSGD(params, lr=config.lr, momentum=config.momentum_start)
    return torch.optim.Adam(params, lr=config.lr, betas=(0.5, 0.999))
