"""Request checks that pydantic's field types cannot express, shared by the routes. Each
raises RequestError naming the field and the limit."""

from __future__ import annotations

import numpy as np

from service.errors import RequestError
from service.runtime import Model

MAX_ABS_LATENT = 1e3


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
