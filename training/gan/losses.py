"""The value function V(D, G) of Eq. 1, computed from D's logits for numerical stability.

With D(x) = sigmoid(l): -log D(x) = softplus(-l) and -log(1 - D(x)) = softplus(l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-(mean log D(x) + mean log(1 - D(G(z)))): D ascends V by descending this."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """`minimax`: mean log(1 - D(G(z))), Eq. 1 as written, which saturates when D wins.
    `non-saturating`: mean -log D(G(z)), the paper's Section 3 advice."""
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"g_loss must be 'minimax' or 'non-saturating', got {kind!r}")
