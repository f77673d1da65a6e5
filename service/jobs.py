"""Durable batch-generation jobs: each job is `<id>.json` (its state) and, once done,
`<id>.npz` in the jobs folder, so results outlive the service (BentoML's own task store
is wiped at every start). A job still `in_progress` when the service starts was cut off
by a restart: it is marked failed, never silently lost."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from service.request_errors import RequestError

_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class JobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, suffix: str) -> Path:
        if not _ID.fullmatch(job_id or ""):
            raise RequestError("task_id", "not a job id (letters, digits, '-', '_')")
        return self.folder / f"{job_id}{suffix}"

    def _write_state(self, job_id: str, state: dict) -> None:
        path = self._path(job_id, ".json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def start(self, job_id: str, n: int, seed: int, model: str) -> None:
        self._write_state(job_id, {"state": "in_progress", "n": n, "seed": seed,
                                   "model": model, "created": _now()})

    def complete(self, job_id: str, images: np.ndarray, seed: int) -> Path:
        path = self._path(job_id, ".npz")
        tmp = path.with_suffix(".tmp.npz")
        try:
            np.savez_compressed(tmp, images=images, seed=np.int64(seed))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a partial file would only fill the disk further
            raise
        self._write_state(job_id, {**self.status(job_id), "state": "completed",
                                   "finished": _now()})
        return path

    def fail(self, job_id: str, reason: str) -> None:
        """Record the failure; where even that cannot be written (a full disk), log it."""
        try:
            state = self.status(job_id)
        except (RequestError, OSError, ValueError):
            state = {}
        try:
            self._write_state(job_id, {**state, "state": "failed", "error": reason,
                                       "finished": _now()})
        except OSError as err:
            logging.getLogger("counterfeit").error("job %s failed (%s) and its state could "
                                                   "not be written: %s", job_id, reason, err)

    def status(self, job_id: str) -> dict:
        path = self._path(job_id, ".json")
        if not path.is_file():
            raise RequestError("task_id", "no such job", 404)
        return json.loads(path.read_text())

    def result(self, job_id: str) -> Path:
        state = self.status(job_id)
        if state["state"] != "completed":
            detail = f": {state['error']}" if "error" in state else ""
            raise RequestError("task_id", f"job is {state['state']}{detail}", 409)
        return self._path(job_id, ".npz")

    def mark_interrupted(self) -> int:
        """At start-up: jobs left in progress by the last run failed; returns how many."""
        count = 0
        for path in self.folder.glob("*.json"):
            state = json.loads(path.read_text())
            if state.get("state") == "in_progress":
                self.fail(path.stem, "interrupted by a service restart; submit it again")
                count += 1
        return count

    def counts(self) -> dict[str, int]:
        counts = {"in_progress": 0, "completed": 0, "failed": 0}
        for path in self.folder.glob("*.json"):
            state = json.loads(path.read_text()).get("state")
            counts[state] = counts.get(state, 0) + 1
        return counts
