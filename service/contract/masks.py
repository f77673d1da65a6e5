"""Which pixels an inpainting model completes (§7.3 of the paper: p(x_S | x_not S)): the
named mask families, shared by training (which draws them per example), evaluation and
the service (`/inpaint` with a family and a seed). numpy only. A mask is a bool array of
the image's height and width, True where a pixel is hidden (to be completed); every
channel of a pixel is hidden together.

    half      one of the four halves (top, bottom, left, right)
    quarters  whole quadrants: round(4 * hidden) of the four, chosen at random
    centre    a centred square of side sqrt(hidden * H * W)
    pixels    each pixel hidden with probability `hidden`
"""

from __future__ import annotations

import math

import numpy as np

FAMILIES = ("half", "quarters", "centre", "pixels")
# fractions hidden that training draws for each example; evaluation uses 0.5
TRAIN_HIDDEN = (0.25, 0.75)


def family_mask(family: str, hidden: float, rng: np.random.Generator,
                size: tuple[int, int]) -> np.ndarray:
    """One (H, W) bool mask of `family` hiding about `hidden` of the pixels (a half is
    always 0.5; quarters come in steps of 0.25)."""
    h, w = size
    mask = np.zeros((h, w), bool)
    if family == "half":
        side = int(rng.integers(4))
        if side == 0:
            mask[: h // 2] = True
        elif side == 1:
            mask[h // 2:] = True
        elif side == 2:
            mask[:, : w // 2] = True
        else:
            mask[:, w // 2:] = True
    elif family == "quarters":
        count = min(3, max(1, round(4 * hidden)))
        for q in rng.choice(4, size=count, replace=False):
            rows = slice(0, h // 2) if q < 2 else slice(h // 2, h)
            cols = slice(0, w // 2) if q % 2 == 0 else slice(w // 2, w)
            mask[rows, cols] = True
    elif family == "centre":
        side_h = min(h, round(math.sqrt(hidden) * h))
        side_w = min(w, round(math.sqrt(hidden) * w))
        top, left = (h - side_h) // 2, (w - side_w) // 2
        mask[top:top + side_h, left:left + side_w] = True
    elif family == "pixels":
        mask = rng.random((h, w)) < hidden
        if not mask.any():  # at least one hidden and one visible pixel, whatever the luck
            mask[rng.integers(h), rng.integers(w)] = True
        if mask.all():
            mask[rng.integers(h), rng.integers(w)] = False
    else:
        raise ValueError(f"unknown mask family {family!r}; choose from {FAMILIES}")
    return mask


def masks(family: str, n: int, seed: int, size: tuple[int, int],
          hidden: float = 0.5) -> np.ndarray:
    """(n, H, W) masks of one family from a seed: `/inpaint` and the evaluation."""
    rng = np.random.default_rng(seed)
    return np.stack([family_mask(family, hidden, rng, size) for _ in range(n)])


def training_masks(n: int, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W) masks as training draws them: a family and a hidden fraction in
    TRAIN_HIDDEN per example, so one model learns every family at every size."""
    families = rng.integers(len(FAMILIES), size=n)
    hidden = rng.uniform(*TRAIN_HIDDEN, size=n)
    return np.stack([family_mask(FAMILIES[f], float(p), rng, size)
                     for f, p in zip(families, hidden, strict=True)])
