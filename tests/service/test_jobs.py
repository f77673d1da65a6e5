"""The jobs folder and the job runner: durable state, progress, failures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from service.errors import RequestError
from service.jobs import JobRunner, JobsFolderError, JobStore
from service.settings import Settings
from service.startup import check_or_exit


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


def test_a_file_that_is_not_a_job_state_is_skipped_with_one_warning(tmp_path: Path,
                                                                     caplog) -> None:
    """A truncated or non-object state file used to crash mark_interrupted and counts, so
    the worker's __init__, which BentoML restarts for ever."""
    store = JobStore(tmp_path)
    live = store.create(10, 1, "m")["job_id"]
    bad = {"a" * 32: b'{"job_id": "aaaa", "state": "runn', "b" * 32: b"[1, 2]",
           "c" * 32: b"null", "d" * 32: b'{"state": "running"}',
           "e" * 32: b'{"state": "x", "n": 1, "done": 0}', "f" * 32: b"\xff\xfe"}
    for job_id, content in bad.items():
        (tmp_path / f"{job_id}.json").write_bytes(content)
    (tmp_path / f"{'0' * 32}.json").mkdir()
    os.mkfifo(tmp_path / f"{'1' * 32}.json")  # reading it would block for ever
    (tmp_path / "notes.json").write_text("{}")
    skipped = [*bad, "0" * 32, "1" * 32, "notes"]
    with caplog.at_level(logging.WARNING, logger="counterfeit"):
        assert store.mark_interrupted() == 1
        assert store.counts() == {"queued": 0, "running": 0, "completed": 0, "failed": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(skipped)  # one each, from mark_interrupted; none from counts
    for name, message in zip(sorted(skipped), warnings, strict=True):
        assert f"skipped {tmp_path / name}.json: " in message
    assert store.status(live)["state"] == "failed"
    for job_id in [*bad, "0" * 32, "1" * 32]:
        with pytest.raises(RequestError, match="state file is unreadable") as err:
            store.status(job_id)
        assert err.value.status == 404


@pytest.mark.parametrize(("where", "reason"), [("file", "not a folder"),
                                               ("file/jobs", "Not a directory")])
def test_a_jobs_folder_that_cannot_be_made_stops_start_up_naming_it(tmp_path: Path, where: str,
                                                                    reason: str) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(JobsFolderError, match=f"{tmp_path / where}: .*{reason}"):
        JobStore(tmp_path / where)
    settings = Settings(jobs_dir=tmp_path / where, models_dir=tmp_path / "no-models")
    with pytest.raises(SystemExit, match=f"cannot start: COUNTERFEIT_JOBS_DIR: {tmp_path}"):
        check_or_exit(settings)
