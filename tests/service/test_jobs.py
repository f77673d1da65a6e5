"""The jobs folder and the job runner: durable state, progress, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import RequestError
from service.jobs import JobRunner, JobStore


def test_a_job_cut_off_by_a_restart_is_reported_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    a = store.create(10, 1, "m")["job_id"]
    b = store.create(10, 2, "m")["job_id"]
    store.complete(b, np.zeros((10, 28, 28), np.uint8), 2)
    restarted = JobStore(tmp_path)
    assert restarted.mark_interrupted() == 1
    assert restarted.status(a)["state"] == "failed"
    assert "restart" in restarted.status(a)["error"]
    with pytest.raises(RequestError, match="job is failed: interrupted"):
        restarted.result(a)
    assert restarted.result(b).is_file()  # finished results survive
    assert restarted.counts() == {"queued": 0, "running": 0, "completed": 1, "failed": 1}


def test_an_unwritable_result_fails_the_job_not_the_runner(tmp_path: Path,
                                                           runtime_models: dict) -> None:
    model = runtime_models["tiny"]
    store = JobStore(tmp_path)
    runner = JobRunner(store, lambda m, z: m.generate(z), chunk=4)
    # np.savez cannot write where a folder stands: every job of this runner fails to write
    blocked = store.create(1, 0, "m")["job_id"]
    (tmp_path / f"{blocked}.tmp.npz").mkdir()
    runner._run(blocked, model, 10, 1)
    state = store.status(blocked)
    assert state["state"] == "failed" and "could not write the result" in state["error"]
    ok = runner.submit(model, 10, 1)["job_id"]
    runner.pool.shutdown(wait=True)
    assert store.status(ok)["state"] == "completed" and store.status(ok)["progress"] == 1.0
    images = np.load(store.result(ok))["images"]
    expected = np.round(model.generate(model.latents(10, 1)) * 255)
    assert images.shape == (10, 28, 28) and np.abs(images - expected).max() <= 1


def test_progress_is_recorded_chunk_by_chunk(tmp_path: Path, runtime_models: dict) -> None:
    store = JobStore(tmp_path)
    seen: list[int] = []

    def generate(model, z):
        seen.append(store.status(job_id)["done"])
        return model.generate(z)

    job_id = store.create(10, 0, "tiny")["job_id"]
    JobRunner(store, generate, chunk=4)._run(job_id, runtime_models["tiny"], 10, 0)
    assert seen == [0, 4, 8] and store.status(job_id)["done"] == 10
