"""Request checks that pydantic's field types cannot express, shared by the routes. Each
raises RequestError naming the field and the limit."""

from __future__ import annotations

import numpy as np

from service.errors import RequestError
from service.runtime import Model

MAX_ABS_LATENT = 1e3
# memory one request may take for its float32 latents and images, and one job for its
# float32 latents and uint8 images: the field limits hold for the shipped model's size,
# these hold for any card's (a card allows 3 x 4096 x 4096 images)
MAX_REQUEST_BYTES = 256 << 20
MAX_JOB_BYTES = 1 << 30


def within_memory(model: Model, field: str, rows: int, job: bool = False) -> int:
    """`rows` images of `model`, unless they would take more than the budget."""
    card = model.card
    per_row = card.latent.dim * 4 + card.image.pixels * (1 if job else 4)
    budget = MAX_JOB_BYTES if job else MAX_REQUEST_BYTES
    if rows * per_row > budget:
        raise RequestError(field, f"at most {budget // per_row} for model {model.name} "
                           f"(images of {list(card.image.card_shape)}), got {rows}")
    return rows


def latent_end(model: Model, which: str, seed: int | None, z: list[float] | None) -> np.ndarray:
    """One end of an interpolation: from `seed_<which>` (the seed contract) or given as
    `z_<which>`, exactly one of them."""
    if (seed is None) == (z is None):
        raise RequestError(f"seed_{which}", f"give exactly one of seed_{which} and z_{which}")
    if seed is not None:
        return model.latents(1, seed)[0]
    vector = np.asarray(z, dtype=np.float64)
    dim = model.card.latent.dim
    if vector.shape != (dim,):
        raise RequestError(f"z_{which}", f"must be a list of {dim} numbers, got {vector.size}")
    if not np.isfinite(vector).all() or np.abs(vector).max() > MAX_ABS_LATENT:
        raise RequestError(f"z_{which}", f"values must be finite and within ±{MAX_ABS_LATENT:g}")
    return vector.astype(np.float32)


def labels(model: Model, label: int | list[int] | None, n: int) -> np.ndarray | None:
    """The class of each of `n` images: one label for all, or a list of n. None for a
    model without conditioning (where giving a label is an error)."""
    conditioning = model.card.conditioning
    if conditioning is None:
        if label is not None:
            raise RequestError("label", f"model {model.name} takes no label")
        return None
    if label is None:
        raise RequestError("label", f"model {model.name} is conditional: give a label in "
                           f"[0, {conditioning.classes - 1}] or a list of {n}")
    values = np.full(n, label, np.int64) if isinstance(label, int) else np.asarray(label,
                                                                                   np.int64)
    if values.shape != (n,):
        raise RequestError("label", f"give one label or a list of {n}, got {values.size}")
    if values.min() < 0 or values.max() >= conditioning.classes:
        raise RequestError("label", f"labels must be in [0, {conditioning.classes - 1}]")
    return values
