"""Durable batch-generation jobs. Each job is `<id>.json` (its state, rewritten atomically)
and, once done, `<id>.npz` in the jobs folder, so results outlive the service. Jobs run
on a small pool of their own (`JobRunner`), never on the threads that answer requests.

States: queued -> running -> completed | failed. A job still queued or running when the
service starts was cut off by a restart: it is marked failed, never silently lost. A state
file that is not a job's state (truncated, not a JSON object, a FIFO, ...) is skipped with
one warning at start, counted nowhere, and its job is answered 404 saying so.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.errors import RequestError
from service.images import to_uint8
from service.runtime import Model

log = logging.getLogger("counterfeit")
_ID_CHARS = frozenset("0123456789abcdef")
LIVE_STATES = ("queued", "running")
STATES = (*LIVE_STATES, "completed", "failed")


def _is_job_id(job_id: object) -> bool:
    return isinstance(job_id, str) and len(job_id) == 32 and set(job_id) <= _ID_CHARS


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class JobsFolderError(RuntimeError):
    """The jobs folder cannot be made or written; the message names it and says why."""


def _read_state(path: Path) -> dict:
    """The job state in `path`; ValueError saying why it is not one."""
    if not path.is_file():  # a FIFO would block the reader for ever
        raise ValueError("not a regular file")
    try:
        state = json.loads(path.read_bytes())
    except OSError as err:
        raise ValueError(err.strerror or str(err)) from None
    except ValueError as err:  # truncated, not JSON, not UTF-8
        raise ValueError(f"not JSON: {err}") from None
    if not (isinstance(state, dict) and state.get("state") in STATES
            and type(state.get("n")) is int and type(state.get("done")) is int
            and state["n"] > 0):
        raise ValueError("not a job state object")
    return state


class JobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        if folder.exists() and not folder.is_dir():
            raise JobsFolderError(f"{folder}: not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()  # a read-only mount, root or not
        except OSError as err:
            raise JobsFolderError(f"{folder}: cannot make or write the jobs folder "
                                  f"({err.strerror or err})") from None

    def _path(self, job_id: str, suffix: str) -> Path:
        if not _is_job_id(job_id):
            raise RequestError("job_id", "not a job id (32 hex digits, as /jobs/submit "
                               "returns)")
        return self.folder / f"{job_id}{suffix}"

    def _write_state(self, job_id: str, state: dict) -> None:
        path = self._path(job_id, ".json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def create(self, n: int, seed: int, model: str) -> dict:
        job_id = uuid.uuid4().hex
        state = {"job_id": job_id, "state": "queued", "n": n, "done": 0, "seed": seed,
                 "model": model, "created": _now()}
        self._write_state(job_id, state)
        return state

    def update(self, job_id: str, **changes: object) -> dict:
        state = {**self.status(job_id), **changes}
        self._write_state(job_id, state)
        return state

    def complete(self, job_id: str, images: np.ndarray, seed: int) -> None:
        path = self._path(job_id, ".npz")
        tmp = path.with_suffix(".tmp.npz")
        try:
            np.savez_compressed(tmp, images=images, seed=np.int64(seed))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a partial file would only fill the disk further
            raise
        self.update(job_id, state="completed", done=len(images), finished=_now())

    def fail(self, job_id: str, reason: str) -> None:
        """Record the failure; where even that cannot be written (a full disk), log it."""
        try:
            self.update(job_id, state="failed", error=reason, finished=_now())
        except (RequestError, OSError, ValueError) as err:
            log.error("job %s failed (%s) and its state could not be written: %s",
                      job_id, reason, err)

    def status(self, job_id: str) -> dict:
        path = self._path(job_id, ".json")
        if not os.path.lexists(path):
            raise RequestError("job_id", "no such job", 404)
        try:
            state = _read_state(path)
        except ValueError as err:
            raise RequestError("job_id", f"this job's state file is unreadable ({err}); "
                               "submit the job again", 404) from None
        return {**state, "progress": round(state["done"] / state["n"], 4)}

    def result(self, job_id: str) -> Path:
        state = self.status(job_id)
        if state["state"] != "completed":
            detail = f": {state['error']}" if "error" in state else ""
            raise RequestError("job_id", f"job is {state['state']}{detail}", 409)
        return self._path(job_id, ".npz")

    def _states(self, warn: bool = False) -> Iterator[tuple[str, dict]]:
        """(job id, state) of every job in the folder; a file that is not a job's state
        is skipped, with a warning naming it if `warn`."""
        for path in sorted(self.folder.glob("*.json")):
            try:
                if not _is_job_id(path.stem):
                    raise ValueError("its name is not a job id")
                state = _read_state(path)
            except ValueError as err:
                if warn:
                    log.warning("jobs folder: skipped %s: %s", path, err)
                continue
            yield path.stem, state

    def mark_interrupted(self) -> int:
        """At start-up: jobs left queued or running by the last run failed; how many. Files
        that are not a job's state are skipped, one warning each."""
        count = 0
        for job_id, state in self._states(warn=True):
            if state["state"] in LIVE_STATES:
                self.fail(job_id, "interrupted by a service restart; submit it again")
                count += 1
        return count

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for _, state in self._states():
            counts[state["state"]] += 1
        return counts


class JobRunner:
    """Runs jobs on `workers` threads of its own. A job draws all its latents from its
    seed (the seed contract), runs `generate(model, z)` on them `chunk` at a time and
    records its progress after each chunk."""

    def __init__(self, store: JobStore, generate: Callable[[Model, np.ndarray], np.ndarray],
                 workers: int = 1, chunk: int = 1024,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.store, self.generate, self.chunk, self.on_change = store, generate, chunk, on_change
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")

    def submit(self, model: Model, n: int, seed: int) -> dict:
        state = self.store.create(n, seed, model.name)
        self.pool.submit(self._run, state["job_id"], model, n, seed)
        self.on_change()
        return self.store.status(state["job_id"])

    def _run(self, job_id: str, model: Model, n: int, seed: int) -> None:
        try:
            self.store.update(job_id, state="running", started=_now())
            self.on_change()
            z = model.latents(n, seed)
            images = np.empty((n, *model.card.image.card_shape), np.uint8)
            for start in range(0, n, self.chunk):
                chunk = self.generate(model, z[start:start + self.chunk])
                images[start:start + len(chunk)] = to_uint8(chunk)
                if start + len(chunk) < n:
                    self.store.update(job_id, done=start + len(chunk))
            self.store.complete(job_id, images, seed)
        except OSError as err:  # disk full, folder unwritable: the job fails, we stay up
            self.store.fail(job_id, f"could not write the result: {err.strerror or err}")
        except Exception as err:  # any other fault fails this job, not the pool
            log.exception("job %s failed", job_id)
            self.store.fail(job_id, f"internal error: {type(err).__name__}")
        finally:
            self.on_change()
