"""Adaptive batching inside the serving process: concurrent requests' rows go through one
onnxruntime call. A request's latents are fixed before it is queued (the seed contract),
and G maps each row independently, so batching never changes what a request gets.

The batcher waits for more rows only when waiting can pay: when the worker has requests
in flight that are not in the batch yet (`in_flight`: the LoadShedder's count), so a lone
client's request runs at once and concurrent ones still share a call. A request alone in
the worker is not even handed to the batcher's thread: its caller runs it (`alone`,
`run_alone`; callers on the event loop do so only for small requests). The wait ends at
`max_wait_s`, or as soon as every request in flight has joined.

A request whose client has gone while it waited in the queue is dropped when its batch
runs (ClientGone, service/asgi/load_shedding.py): its rows are never computed.

BentoML's own batcher (`batchable=True`) was not used: it takes one array per call (a
JSON `/sample` body is not one), answers 503 when it expects to miss its latency budget,
and its internal client failed under load on these machines (shared/notes).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from service.asgi.load_shedding import Client, ClientGone, current_client, lower_thread_priority

Item = tuple[np.ndarray, Future, Client | None]  # rows, their answer, whose request


class MicroBatcher:
    """One worker thread: take the first waiting request, then whatever else arrives within
    `max_wait_s` while the batch holds fewer than `max_rows` rows and other requests are in
    flight; run `fn` once on all of them; hand each request its rows back. A request larger
    than `max_rows` runs alone. Without `in_flight` it always waits its `max_wait_s`."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_rows: int = 256,
                 max_wait_s: float = 0.002,
                 on_batch: Callable[[int, float], None] | None = None,
                 in_flight: Callable[[], int] | None = None) -> None:
        if max_rows < 1 or max_wait_s < 0:
            raise ValueError("need max_rows >= 1 and max_wait_s >= 0")
        self.fn, self.max_rows, self.max_wait_s = fn, max_rows, max_wait_s
        self.on_batch = on_batch
        self.in_flight = in_flight
        self._queue: queue.Queue[Item] = queue.Queue()
        self._carry: Item | None = None  # opens the next batch
        self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._worker.start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """fn(x) for a caller on a thread that may block: at once if alone (`alone`), else
        in a batch."""
        return self.run_alone(x) if self.alone() else self.submit(x).result()

    def submit(self, x: np.ndarray) -> Future:
        """Queue x's rows for the next batch; the future holds fn's rows for them (for a
        caller on the event loop: asyncio.wrap_future)."""
        future: Future = Future()
        self._queue.put((x, future, current_client()))
        return future

    def alone(self) -> bool:
        """Whether the caller's request is the only one in flight and no batch is forming:
        then nobody can join it, and handing it to the batcher's thread would only cost
        two thread switches."""
        return self._carry is None and self._queue.empty() and not self._others_in_flight(1)

    def _run(self) -> None:
        lower_thread_priority()  # like the request threads: the event loop comes first
        while True:
            batch = [self._carry or self._queue.get()]
            self._carry = None
            rows = len(batch[0][0])
            deadline = time.perf_counter() + self.max_wait_s
            while rows < self.max_rows:
                if self._queue.empty() and not self._others_in_flight(len(batch)):
                    break  # nobody else can join: waiting would only add latency
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if rows + len(item[0]) > self.max_rows:
                    self._carry = item
                    break
                batch.append(item)
                rows += len(item[0])
            self._execute(batch)

    def _others_in_flight(self, in_batch: int) -> bool:
        """Requests in flight that may still join: those not in the batch (a request in
        flight on another route, or one whose answer is being sent, may never join; the
        wait stays bounded by max_wait_s)."""
        return self.in_flight is None or self.in_flight() > in_batch

    def run_alone(self, x: np.ndarray) -> np.ndarray:
        """fn(x) on the caller's thread, counted as a batch of its own."""
        started = time.perf_counter()
        out = self.fn(x)
        if self.on_batch is not None:
            self.on_batch(len(x), time.perf_counter() - started)
        return out

    def _execute(self, batch: list[Item]) -> None:
        for _, future, client in batch:
            if client is not None and client.drop_if_gone():
                future.set_exception(ClientGone())
        batch = [item for item in batch if not item[1].done()]
        if not batch:
            return
        started = time.perf_counter()
        try:
            out = self.fn(np.concatenate([x for x, _, _ in batch]))
        except Exception as err:  # every waiting request learns of it, the worker lives on
            for _, future, _ in batch:
                future.set_exception(err)
            return
        if self.on_batch is not None:
            self.on_batch(sum(len(x) for x, _, _ in batch), time.perf_counter() - started)
        start = 0
        for x, future, _ in batch:
            future.set_result(out[start:start + len(x)])
            start += len(x)
