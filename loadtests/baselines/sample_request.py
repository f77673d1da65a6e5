"""The /sample body as the peers of `make bench` read it: Counterfeit's fields, checked only
as far as a server must to stay up. One reading for every peer, so they differ in serving
machinery only."""

from __future__ import annotations

from service.contract.card import SEED_MAX, random_seed

MAX_N = 1024


def parse(request: object) -> tuple[int, int, str, str]:
    """(n, seed, format, dtype) of a /sample body (a random seed when none is given);
    ValueError naming the field when unusable."""
    if not isinstance(request, dict):
        raise ValueError("the body must be a JSON object")
    n, seed = request.get("n", 16), request.get("seed")
    fmt, dtype = request.get("format", "png"), request.get("dtype", "float32")
    if type(n) is not int or not 1 <= n <= MAX_N:
        raise ValueError(f"n must be an integer in [1, {MAX_N}]")
    if seed is None:
        seed = random_seed()
    elif type(seed) is not int or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be an integer in [0, {SEED_MAX}]")
    if fmt not in ("npy", "png") or dtype not in ("float32", "uint8"):
        raise ValueError("format must be npy or png, dtype float32 or uint8")
    return n, seed, fmt, dtype
