from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from service.batcher import MicroBatcher


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    calls: list[int] = []
    gate, entered = threading.Event(), threading.Event()

    def fn(x: np.ndarray) -> np.ndarray:
        entered.set()
        gate.wait(10)  # hold the first call so the others queue up behind it
        calls.append(len(x))
        return x * 2

    batcher = MicroBatcher(fn, max_rows=64, max_wait_s=0.05)
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = batcher(np.full((i + 1, 3), float(i)))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    threads[0].start()
    assert entered.wait(10)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while batcher._queue.qsize() < 7:  # all seven waiting behind the held call
        assert time.monotonic() < deadline, "requests never queued"
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(10)
    for i in range(8):
        np.testing.assert_array_equal(results[i], np.full((i + 1, 3), 2.0 * i))
    assert calls == [1, sum(range(2, 9))]  # the seven waiting requests went in one call
    assert max(calls) <= 64


def test_a_failing_batch_fails_its_requests_and_the_worker_survives() -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise RuntimeError("bad rows")
        return x

    batcher = MicroBatcher(fn, max_rows=8, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="bad rows"):
        batcher(np.array([[-1.0]]))
    np.testing.assert_array_equal(batcher(np.array([[1.0]])), [[1.0]])


def test_a_lone_request_runs_without_waiting_for_company() -> None:
    """Only the caller is in flight: the batch runs at once, not after max_wait_s (60 s
    here: a wait would fail the 10 s timeout below, not slow the test)."""
    calls: list[int] = []
    batcher = MicroBatcher(lambda x: calls.append(len(x)) or x, max_rows=64, max_wait_s=60,
                           in_flight=lambda: 1)
    done = threading.Event()
    result: list[np.ndarray] = []

    def ask() -> None:
        result.append(batcher(np.ones((3, 2))))
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    assert done.wait(10), "a lone request waited for others that were not in flight"
    assert calls == [3]


def test_the_wait_ends_when_every_request_in_flight_has_joined() -> None:
    """Two requests in flight: the first waits for the second (max_wait_s is 60 s), and the
    batch runs as soon as it has joined: one call with both."""
    calls: list[int] = []
    batcher = MicroBatcher(lambda x: calls.append(len(x)) or x, max_rows=64, max_wait_s=60,
                           in_flight=lambda: 2)
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, batcher(np.full((i + 1, 2), float(i)))), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "the batch waited past the second request"
    assert calls == [3]
    np.testing.assert_array_equal(results[1], np.full((2, 2), 1.0))


def test_a_lone_request_runs_on_its_own_thread_and_is_still_counted() -> None:
    """Nobody else in flight: no hand-off to the batcher's thread (two thread switches
    saved per request), and the batch observer still sees the call."""
    ran_on: list[threading.Thread] = []
    observed: list[int] = []
    batcher = MicroBatcher(lambda x: ran_on.append(threading.current_thread()) or x,
                           on_batch=lambda rows, seconds: observed.append(rows),
                           in_flight=lambda: 1)
    np.testing.assert_array_equal(batcher(np.ones((5, 2))), np.ones((5, 2)))
    assert ran_on == [threading.current_thread()] and observed == [5]


def test_with_others_in_flight_a_request_goes_to_the_batchers_thread() -> None:
    ran_on: list[threading.Thread] = []
    batcher = MicroBatcher(lambda x: ran_on.append(threading.current_thread()) or x,
                           max_wait_s=0.0, in_flight=lambda: 2)
    batcher(np.ones((1, 2)))
    assert ran_on == [batcher._worker]
