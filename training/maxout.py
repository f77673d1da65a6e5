"""Maxout (Goodfellow et al., 2013): a linear map to units x pieces, then the max per unit."""

from __future__ import annotations

import torch
from torch import nn


class Maxout(nn.Module):
    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        if units < 1 or pieces < 1:
            raise ValueError("maxout needs units >= 1 and pieces >= 1")
        self.units, self.pieces = units, pieces
        # pylearn2 lays the pieces of one unit out next to each other: unit u owns
        # outputs u*pieces .. u*pieces + pieces - 1.
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z.view(*z.shape[:-1], self.units, self.pieces).amax(dim=-1)
