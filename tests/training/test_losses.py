from __future__ import annotations

import math

import pytest
import torch

from training.gan.losses import discriminator_loss, generator_loss


def test_losses_match_the_value_function_written_with_d() -> None:
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-0.5, 1.5, 0.0])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    torch.testing.assert_close(discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(generator_loss(fake, "minimax"), torch.log(1 - d_fake).mean())
    torch.testing.assert_close(generator_loss(fake, "non-saturating"), -torch.log(d_fake).mean())


def test_losses_stay_finite_where_d_saturates() -> None:
    # sigmoid(+-200) rounds to 0/1 in float32; the logit form must not give inf or nan
    real, fake = torch.tensor([-200.0]), torch.tensor([200.0])
    assert discriminator_loss(real, fake).item() == pytest.approx(400.0)
    assert generator_loss(-fake, "non-saturating").item() == pytest.approx(200.0)
    assert math.isfinite(generator_loss(fake, "minimax").item())


def test_minimax_gradient_vanishes_when_d_rejects_fakes_but_non_saturating_does_not() -> None:
    """The paper's Section 3: log(1 - D(G(z))) saturates early in learning."""
    grads = {}
    for kind in ("minimax", "non-saturating"):
        logit = torch.tensor([-8.0], requires_grad=True)  # D(G(z)) ~ 3e-4
        generator_loss(logit, kind).backward()
        grads[kind] = abs(logit.grad.item())
    assert grads["minimax"] < 1e-3 < 0.99 < grads["non-saturating"]


def test_unknown_generator_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="g_loss"):
        generator_loss(torch.zeros(1), "wasserstein")
