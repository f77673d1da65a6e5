"""The jobs folder: each job's state and result chunks, on disk, shared by every worker and
replica that serves the same folder (docs/jobs.md).

    <folder>/<job id>/state.json       the job's state, rewritten atomically under .lock
    <folder>/<job id>/chunk-NNNNN.npy  finished rows, uint8 (rows, *image shape), each
                                       written whole (a temporary file, then a rename)
    <folder>/active/<job id>           one empty file per queued or running job
    <folder>/expires/<unix time>-<id>  one empty file per finished job: removed after then

So a worker finds the live jobs and the expired ones by listing a small folder, never by
reading every job that was ever run. A state file that is not a job's state is answered
404 saying so, and skipped with one warning where a sweep meets it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from service.errors import RequestError

log = logging.getLogger("counterfeit")
_ID_CHARS = frozenset("0123456789abcdef")
LIVE_STATES = ("queued", "running")
FINISHED_STATES = ("completed", "failed", "canceled")
STATES = (*LIVE_STATES, *FINISHED_STATES)
CHUNK_BYTES = 16 << 20  # rows per chunk: as many float32 images as fit, at most MAX_CHUNK_ROWS
MAX_CHUNK_ROWS = 1024


def is_job_id(job_id: object) -> bool:
    return isinstance(job_id, str) and len(job_id) == 32 and set(job_id) <= _ID_CHARS


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def chunk_rows(pixels: int) -> int:
    """Rows per chunk for images of `pixels` values: a job's memory is one chunk's."""
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // (4 * pixels)))


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
    ints = ("n", "done", "seed", "attempt", "chunk_rows")
    if not (isinstance(state, dict) and state.get("state") in STATES
            and all(type(state.get(key)) is int for key in ints)
            and state["n"] > 0 and state["chunk_rows"] > 0
            and isinstance(state.get("image_shape"), list)):
        raise ValueError("not a job state object")
    return state


class JobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.active_dir, self.expires_dir = folder / "active", folder / "expires"
        if folder.exists() and not folder.is_dir():
            raise JobsFolderError(f"{folder}: not a folder")
        try:
            for path in (folder, self.active_dir, self.expires_dir):
                path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()  # a read-only mount, root or not
        except OSError as err:
            raise JobsFolderError(f"{folder}: cannot make or write the jobs folder "
                                  f"({err.strerror or err})") from None

    # -- one job -------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise RequestError("job_id", "not a job id (32 hex digits, as /jobs/submit "
                               "returns)")
        return self.folder / job_id

    def create(self, n: int, seed: int, model: str, image_shape: tuple[int, ...],
               classes: np.ndarray | None = None) -> dict:
        """A queued job. A conditional job's classes are its state's `label` when they are
        all one, else labels.npy beside the state."""
        job_id = uuid.uuid4().hex
        rows = chunk_rows(int(np.prod(image_shape)))
        state = {"job_id": job_id, "state": "queued", "n": n, "done": 0, "seed": seed,
                 "model": model, "image_shape": list(image_shape), "chunk_rows": rows,
                 "attempt": 1, "created": now_iso()}
        self.job_dir(job_id).mkdir()
        if classes is not None:
            if (classes == classes[0]).all():
                state["label"] = int(classes[0])
            else:
                state["label"] = "per image (labels.npy)"
                np.save(self.job_dir(job_id) / "labels.npy", classes.astype(np.int64))
        self._write_state(job_id, state)
        (self.active_dir / job_id).touch()
        return state

    def status(self, job_id: str) -> dict:
        path = self.job_dir(job_id) / "state.json"
        if not os.path.lexists(path):
            raise RequestError("job_id", "no such job (finished jobs are kept for the "
                               "service's retention time)", 404)
        try:
            state = _read_state(path)
        except ValueError as err:
            raise RequestError("job_id", f"this job's state file is unreadable ({err}); "
                               "submit the job again", 404) from None
        return _with_progress(state)

    def transition(self, job_id: str, change: Callable[[dict], dict | None]) -> dict:
        """Apply `change` to the job's state under the job's lock, so that a cancel, a
        worker and a resumer never overwrite each other: it returns the new state, or
        None to leave it as it is. Returns the state after."""
        with self._locked(job_id):
            state = self.status(job_id)
            new = change(dict(state))
            if new is None:
                return state
            new.pop("progress", None)
            self._write_state(job_id, new)
            if new["state"] in FINISHED_STATES and state["state"] not in FINISHED_STATES:
                (self.active_dir / job_id).unlink(missing_ok=True)
            return _with_progress(new)

    def finish(self, job_id: str, state: str, retention_s: float, **extra: object) -> dict:
        """Mark the job finished (completed, failed or canceled) unless it already is, and
        schedule its removal; returns its state."""
        def change(s: dict) -> dict | None:
            if s["state"] in FINISHED_STATES:
                return None
            return {**s, **extra, "state": state, "finished": now_iso()}
        new = self.transition(job_id, change)
        expiry = int(time.time() + retention_s)
        (self.expires_dir / f"{expiry}-{job_id}").touch()
        return new

    def classes(self, job_id: str) -> np.ndarray | None:
        """The class of every image of a conditional job (None for other jobs)."""
        state = self.status(job_id)
        if "label" not in state:
            return None
        if isinstance(state["label"], int):
            return np.full(state["n"], state["label"], np.int64)
        return np.load(self.job_dir(job_id) / "labels.npy", mmap_mode="r")

    def chunk_path(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / f"chunk-{index:05d}.npy"

    def finished_chunks(self, job_id: str) -> set[int]:
        """The chunks already on disk (each is whole: written under another name, then
        renamed)."""
        found = set()
        with os.scandir(self.job_dir(job_id)) as entries:
            for e in entries:
                if (len(e.name) == 15 and e.name.startswith("chunk-") and e.name[6:11].isdigit()
                        and e.name.endswith(".npy") and e.is_file(follow_symlinks=False)):
                    found.add(int(e.name[6:11]))
        return found

    def write_chunk(self, job_id: str, index: int, images: np.ndarray) -> None:
        path = self.chunk_path(job_id, index)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:  # not np.save: its errors hide errno (ENOSPC, EFBIG)
                f.write(_npy_header(images.shape))
                f.write(np.ascontiguousarray(images, np.uint8).tobytes())
            os.replace(tmp, path)  # a kill mid-write leaves no half chunk under the name
        finally:
            tmp.unlink(missing_ok=True)

    def result(self, job_id: str) -> tuple[dict, int, Iterator[bytes]]:
        """A completed job's state, the size of its .npy and the .npy's bytes, chunk by
        chunk: the result is stored once, as its chunks, and streamed."""
        state = self.status(job_id)
        if state["state"] != "completed":
            detail = f": {state['error']}" if "error" in state else ""
            raise RequestError("job_id", f"job is {state['state']}{detail}", 409)
        shape = (state["n"], *state["image_shape"])
        header = _npy_header(shape)
        rows = state["chunk_rows"]
        chunks = []
        for i, start in enumerate(range(0, state["n"], rows)):
            expected = (min(rows, state["n"] - start), *state["image_shape"])
            try:
                chunk = np.load(self.chunk_path(job_id, i), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                chunk = None
            if chunk is None or chunk.shape != expected or chunk.dtype != np.uint8:
                raise RequestError("job_id", f"this job's result file {i} is missing or "
                                   "damaged; submit the job again", 410)
            chunks.append(chunk.reshape(len(chunk), -1))

        def body() -> Iterator[bytes]:
            yield header
            for chunk in chunks:
                for start in range(0, len(chunk), 256):
                    yield chunk[start:start + 256].tobytes()
        return state, len(header) + int(np.prod(shape)), body()

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        (self.active_dir / job_id).unlink(missing_ok=True)

    # -- the folder ------------------------------------------------------------------------

    def active_ids(self) -> list[str]:
        """Queued and running jobs."""
        return sorted(name for name in os.listdir(self.active_dir) if is_job_id(name))

    def expired(self, now: float) -> list[tuple[Path, str]]:
        """(marker, job id) of finished jobs whose retention is over."""
        out = []
        for name in os.listdir(self.expires_dir):
            stamp, _, job_id = name.partition("-")
            if stamp.isdigit() and is_job_id(job_id) and int(stamp) <= now:
                out.append((self.expires_dir / name, job_id))
        return out

    def _write_state(self, job_id: str, state: dict) -> None:
        path = self.job_dir(job_id) / "state.json"
        tmp = path.with_name(f"state.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        path = self.job_dir(job_id) / ".lock"
        if not path.parent.is_dir():
            raise RequestError("job_id", "no such job", 404)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # across processes; NFSv4 and local disks
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _with_progress(state: dict) -> dict:
    return {**state, "progress": round(state["done"] / state["n"], 4)}


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()
