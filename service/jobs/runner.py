"""Running jobs: submit, run in chunks, cancel, resume, expire (docs/jobs.md).

A job's latents are the seed contract's, drawn a chunk at a time, so any worker can compute
any chunk: a job whose worker stops is resumed from its first missing chunk by whichever
worker notices first, and its result is bit-identical to an uninterrupted run.

Who notices: every process runs a `Supervisor` thread. It beats (adds 1 to a counter in
the queue's storage) for the jobs this process runs, and watches the other running jobs'
beats with its own clock: a running job whose beat has not moved for the lease is claimed
(exactly one claim per attempt succeeds) and queued again as the next attempt. A worker
drops a job as soon as it sees that the job has moved on to a later attempt or was
canceled. Nothing is decided at start-up, so a starting worker never fails another's job.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.errors import RequestError
from service.images import to_uint8
from service.jobs.queue import Counters, make_huey, start_consumer
from service.jobs.store import FINISHED_STATES, JobStore, now_iso
from service.runtime import Model

log = logging.getLogger("counterfeit")
RESERVED_BYTES = "reserved-bytes"
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # in a running job's state, for operators


@dataclass(frozen=True)
class JobLimits:
    max_queued: int
    max_bytes: int
    retention_s: float
    lease_s: float


class JobGone(Exception):
    """The job was canceled, finished or taken over by a later attempt: stop working on it."""


class JobRunner:
    def __init__(self, store: JobStore, models: dict[str, Model],
                 generate: Callable[[Model, np.ndarray, np.ndarray | None], np.ndarray],
                 limits: JobLimits,
                 queue_url: str | None = None, workers: int = 1,
                 on_change: Callable[[str], None] = lambda state: None) -> None:
        self.store, self.models, self.generate, self.limits = store, models, generate, limits
        self.on_change = on_change
        self.huey = make_huey(store.folder, queue_url)
        self.counters = Counters(self.huey)
        self.task = self.huey.task(name="counterfeit.run_job", retries=0)(self.run)
        self.mine: set[str] = set()  # jobs this process is running: the supervisor beats them
        self.stopping = threading.Event()
        self.workers, self.consumer = workers, None
        self.supervisor = Supervisor(self)

    def start(self) -> None:
        """Take jobs from the queue on `workers` threads, and supervise."""
        self.consumer = start_consumer(self.huey, self.workers)
        self.supervisor.start()

    def stop(self) -> None:
        """Stop taking jobs; jobs in progress are handed back to the queue at their next
        chunk, as their next attempt, so another worker (or this one, restarted) resumes
        them at once."""
        self.stopping.set()
        self.supervisor.halt.set()
        if self.consumer is not None:
            self.consumer.stop(graceful=True)

    # -- the API -------------------------------------------------------------------------

    def submit(self, model: Model, n: int, seed: int,
               classes: np.ndarray | None = None) -> dict:
        """Queue a job of `n` images from `seed`, with the class of each image for a
        conditional model."""
        waiting = self.huey.pending_count()
        if waiting >= self.limits.max_queued:
            raise RequestError("n", f"the job queue is full ({waiting} jobs waiting, "
                               f"limit {self.limits.max_queued}); retry later", 429,
                               retry_after=30)
        shape = model.card.image.card_shape
        size = result_bytes(n, shape)
        reserved = self.counters.add(RESERVED_BYTES, size)
        if reserved > self.limits.max_bytes:
            self.counters.add(RESERVED_BYTES, -size)
            raise RequestError("n", f"the jobs folder is full: this job needs {size} bytes "
                               f"and {reserved - size} of its {self.limits.max_bytes}-byte "
                               "quota are in use; retry when older results expire", 507,
                               retry_after=600)
        try:
            state = self.store.create(n, seed, model.name, shape, classes)
            self.task(state["job_id"], 1)
        except BaseException:
            self.counters.add(RESERVED_BYTES, -size)
            raise
        self.on_change("queued")
        return self.store.status(state["job_id"])

    def cancel(self, job_id: str) -> dict:
        state = self.store.status(job_id)
        if state["state"] in FINISHED_STATES:
            raise RequestError("job_id", f"job is already {state['state']}", 409)
        state = self.store.finish(job_id, "canceled", self.limits.retention_s)
        self._remove_chunks(job_id)
        self.on_change("canceled")
        return state

    # -- the Huey task ---------------------------------------------------------------------

    def run(self, job_id: str, attempt: int) -> None:
        """Compute the job's missing chunks. Runs on a consumer thread."""
        try:
            state = self.store.transition(job_id, lambda s: (
                {**s, "state": "running", "started": s.get("started") or now_iso(),
                 "worker": WORKER}
                if s["state"] == "queued" and s["attempt"] == attempt else None))
        except RequestError:  # removed (expired) while it waited
            return
        if state["state"] != "running" or state["attempt"] != attempt:
            return  # canceled, or a later attempt owns it
        self.on_change("running")
        self.mine.add(job_id)
        try:
            self._compute(job_id, state)
            self.store.finish(job_id, "completed", self.limits.retention_s, done=state["n"])
            self.on_change("completed")
        except JobGone:  # a chunk written after a cancel is this worker's to remove
            if self.store.status(job_id)["state"] in ("canceled", "failed"):
                self._remove_chunks(job_id)
        except _ModelMissing as err:
            self._fail(job_id, str(err))
        except _Stopping:
            self._requeue(job_id, attempt, "the worker running it stopped")
        except OSError as err:  # disk full, folder unwritable: the job fails, we stay up
            self._fail(job_id, f"could not write the result: {err.strerror or err}")
        except Exception as err:  # any other fault fails this job, not the worker
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"internal error: {type(err).__name__}")
        finally:
            self.mine.discard(job_id)

    def _compute(self, job_id: str, state: dict) -> None:
        model = self.models.get(state["model"])
        if model is None:
            raise _ModelMissing(state["model"])
        done = self.store.finished_chunks(job_id)
        rows = state["chunk_rows"]
        classes = self.store.classes(job_id)
        latents = model.card.latent.chunks(state["n"], state["seed"], rows)
        for index, z in enumerate(latents):
            if index in done:
                continue  # drawn anyway: the next chunk's latents follow these
            if self.stopping.is_set():
                raise _Stopping
            self._check_owner(job_id, state["attempt"])
            chunk_classes = (None if classes is None else
                             np.asarray(classes[index * rows:index * rows + len(z)]))
            images = to_uint8(self.generate(model, z, chunk_classes))
            self.store.write_chunk(job_id, index, images)
            self.store.transition(job_id, functools.partial(
                _progressed, done=min(state["n"], (index + 1) * rows)))
        self._check_owner(job_id, state["attempt"])

    def _check_owner(self, job_id: str, attempt: int) -> None:
        try:
            state = self.store.status(job_id)
        except RequestError:
            raise JobGone from None
        if state["state"] != "running" or state["attempt"] != attempt:
            raise JobGone

    def _fail(self, job_id: str, reason: str) -> None:
        """Record the failure; where even that cannot be written (a full disk), log it."""
        try:
            self.store.finish(job_id, "failed", self.limits.retention_s, error=reason)
            self._remove_chunks(job_id)
            self.on_change("failed")
        except (RequestError, OSError) as err:
            log.error("job %s failed (%s) and its state could not be written: %s",
                      job_id, reason, err)

    def _remove_chunks(self, job_id: str) -> None:
        for index in self.store.finished_chunks(job_id):
            self.store.chunk_path(job_id, index).unlink(missing_ok=True)

    def _requeue(self, job_id: str, attempt: int, why: str) -> bool:
        """Queue `attempt` + 1 of a job, once however many workers try."""
        if not self.counters.claim(f"claim:{job_id}:{attempt}"):
            return False
        state = self.store.transition(job_id, lambda s: (
            {**s, "state": "queued", "attempt": attempt + 1,
             "resumed": s.get("resumed", 0) + 1, "note": f"resumed: {why}"}
            if s["state"] in ("queued", "running") and s["attempt"] == attempt else None))
        if state["attempt"] != attempt + 1:
            return False
        self.task(job_id, attempt + 1)
        log.warning("job %s: %s; resuming it from chunk %d", job_id, why,
                    len(self.store.finished_chunks(job_id)))
        return True

    def expire(self, now: float) -> int:
        """Remove finished jobs past their retention; how many."""
        removed = 0
        for marker, job_id in self.store.expired(now):
            try:
                state: dict | None = self.store.status(job_id)
            except RequestError:  # unreadable: its reservation cannot be known; it goes
                state = None
            self.store.delete(job_id)
            marker.unlink(missing_ok=True)
            if state is not None:
                self.counters.add(RESERVED_BYTES, -result_bytes(state["n"],
                                                                state["image_shape"]))
            self.counters.forget(f"beat:{job_id}")
            for attempt in range(1, (state["attempt"] if state else 1) + 1):
                self.counters.release(f"claim:{job_id}:{attempt}")
            removed += 1
        return removed


def result_bytes(n: int, image_shape: tuple[int, ...] | list[int]) -> int:
    """What a job's result takes on disk (uint8 images): what the quota reserves for it."""
    return n * int(np.prod(image_shape))


def _progressed(state: dict, done: int) -> dict | None:
    """A running job's state with `done` images finished."""
    if state["state"] != "running":
        return None
    return {**state, "done": max(state["done"], done)}


class _Stopping(Exception):
    """This process is shutting down."""


class _ModelMissing(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name} is not loaded by this worker")


class Supervisor(threading.Thread):
    """Beats for this process's jobs; resumes others' silent ones; removes expired ones."""

    def __init__(self, runner: JobRunner) -> None:
        super().__init__(name="job-supervisor", daemon=True)
        self.runner, self.halt = runner, threading.Event()
        self.seen: dict[str, tuple[int, int, float]] = {}  # job -> (attempt, beat, when)
        self.warned: set[str] = set()

    def run(self) -> None:
        interval = min(5.0, self.runner.limits.lease_s / 4)
        while True:
            try:
                self.tick(time.monotonic())
            except Exception:  # a storage hiccup must not end supervision
                log.exception("job supervisor: one round failed; trying again")
            if self.halt.wait(interval):
                return

    def tick(self, now: float) -> None:
        r = self.runner
        for job_id in list(r.mine):
            r.counters.add(f"beat:{job_id}", 1)
        queued: list[tuple[str, int]] = []
        live = set()
        for job_id in r.store.active_ids():
            live.add(job_id)
            try:
                state = r.store.status(job_id)
            except RequestError as err:
                if job_id not in self.warned:
                    self.warned.add(job_id)
                    log.warning("jobs folder: skipped job %s: %s", job_id, err.message)
                continue
            if state["state"] == "running" and job_id not in r.mine:
                self._watch(job_id, state["attempt"], r.counters.get(f"beat:{job_id}"), now,
                            "the worker running it stopped answering")
            elif state["state"] == "queued":
                queued.append((job_id, state["attempt"]))
        if queued:  # a queued job's message can be lost only by a worker dying as it took it
            waiting = {task.args[0] for task in r.huey.pending() if task.args}
            for job_id, attempt in queued:
                if job_id in waiting:
                    self.seen.pop(job_id, None)
                else:  # a beat that never moves: resumed if it stays missing for the lease
                    self._watch(job_id, attempt, -1, now, "its queue message was lost")
        for job_id in set(self.seen) - live:
            del self.seen[job_id]
        removed = r.expire(time.time())
        if removed:
            r.on_change("expired")

    def _watch(self, job_id: str, attempt: int, beat: int, now: float, why: str) -> None:
        """Resume the job once `beat` has stood still for the lease at this `attempt`."""
        seen = self.seen.get(job_id)
        if seen is None or seen[:2] != (attempt, beat):
            self.seen[job_id] = (attempt, beat, now)
        elif now - seen[2] >= self.runner.limits.lease_s:
            self.runner._requeue(job_id, attempt, why)
            del self.seen[job_id]
