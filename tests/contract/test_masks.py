"""The inpainting mask families: what each hides, from a seed, the same everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from service.contract.masks import FAMILIES, family_mask, masks, training_masks

SIZE = (28, 28)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_hides_about_half_at_one_half(family: str) -> None:
    m = masks(family, 200, seed=3, size=SIZE)
    assert m.shape == (200, 28, 28) and m.dtype == bool
    share = m.mean(axis=(1, 2))
    assert np.all(share > 0) and np.all(share < 1)  # something to complete, something seen
    assert abs(share.mean() - 0.5) < 0.02, share.mean()


def test_the_shapes_are_what_their_names_say() -> None:
    rng = np.random.default_rng(0)
    halves = {family_mask("half", 0.5, rng, SIZE).tobytes() for _ in range(200)}
    assert len(halves) == 4  # top, bottom, left, right
    top = np.zeros(SIZE, bool)
    top[:14] = True
    assert top.tobytes() in halves
    centre = family_mask("centre", 0.25, rng, SIZE)
    assert centre.sum() == 14 * 14 and centre[7:21, 7:21].all()
    for hidden, count in ((0.25, 1), (0.5, 2), (0.75, 3)):
        quarters = family_mask("quarters", hidden, rng, SIZE)
        assert quarters.sum() == count * 14 * 14
        blocks = quarters.reshape(2, 14, 2, 14).all(axis=(1, 3))
        assert blocks.sum() == count  # whole quadrants only


def test_a_seed_gives_the_same_masks_and_a_family_name_is_checked() -> None:
    assert np.array_equal(masks("pixels", 5, 9, SIZE), masks("pixels", 5, 9, SIZE))
    assert not np.array_equal(masks("pixels", 5, 9, SIZE), masks("pixels", 5, 10, SIZE))
    with pytest.raises(ValueError, match="unknown mask family 'ring'"):
        masks("ring", 1, 0, SIZE)


def test_pixels_never_hides_nothing_or_everything() -> None:
    rng = np.random.default_rng(1)
    assert family_mask("pixels", 0.0, rng, SIZE).sum() == 1
    assert family_mask("pixels", 1.0, rng, SIZE).sum() == 28 * 28 - 1


def test_training_draws_every_family_at_every_size() -> None:
    m = training_masks(2000, np.random.default_rng(0), SIZE)
    share = m.mean(axis=(1, 2))
    assert 0.2 < share.min() and share.max() < 0.8
    assert share.std() > 0.1  # sizes vary, not all one half
