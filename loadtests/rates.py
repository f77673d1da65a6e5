"""In-process rates, measured one way for every benchmark script."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], rows: int, seconds: float = 1.0) -> float:
    """Rows per second of fn, from the median of repeated calls over about `seconds` (at
    least five), after one call to warm up."""
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return rows / statistics.median(times)
