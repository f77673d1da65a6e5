"""Jobs outside HTTP: the jobs folder, running in chunks, resuming after a worker dies,
cancel, the queue and disk bounds, expiry, and bad files met on the way."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import RequestError
from service.images import to_uint8
from service.jobs import JobLimits, JobRunner, JobsFolderError, JobStore
from service.jobs.runner import RESERVED_BYTES
from service.jobs.store import chunk_rows
from service.settings import Settings
from service.startup import check_or_exit

LIMITS = JobLimits(max_queued=8, max_bytes=1 << 30, retention_s=3600, lease_s=10)


class WorkerDied(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs, no state is written."""


@pytest.fixture
def make_runner(tmp_path: Path, runtime_models: dict) -> Iterator[Callable[..., JobRunner]]:
    """Runners on one jobs folder, as the workers of one service; not started (tests call
    `run` and the supervisor's `tick` themselves, in order)."""
    made: list[JobRunner] = []

    def make(generate: Callable | None = None, limits: JobLimits = LIMITS) -> JobRunner:
        runner = JobRunner(JobStore(tmp_path), runtime_models,
                           generate or (lambda m, z, c: m.generate(z, c)), limits)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()


def expected_images(model, n: int, seed: int) -> np.ndarray:
    return to_uint8(model.generate(model.latents(n, seed)))


def result_of(store: JobStore, job_id: str) -> np.ndarray:
    import io

    _, size, body = store.result(job_id)
    data = b"".join(body)
    assert len(data) == size  # the Content-Length the route sends
    return np.load(io.BytesIO(data))


def test_a_job_runs_in_chunks_and_its_result_is_the_seed_contracts(make_runner,
                                                                    runtime_models) -> None:
    runner = make_runner()
    model = runtime_models["tiny"]
    job = runner.submit(model, 2500, 11)
    assert job["state"] == "queued" and job["chunk_rows"] == 1024
    runner.run(job["job_id"], 1)
    state = runner.store.status(job["job_id"])
    assert state["state"] == "completed" and state["done"] == 2500 and state["progress"] == 1
    assert sorted(runner.store.finished_chunks(job["job_id"])) == [0, 1, 2]
    np.testing.assert_array_equal(result_of(runner.store, job["job_id"]),
                                  expected_images(model, 2500, 11))


def test_chunks_are_sized_by_the_image_so_a_jobs_memory_is_bounded() -> None:
    assert chunk_rows(28 * 28) == 1024
    assert chunk_rows(3 * 4096 * 4096) == 1  # 200 MB a row: one row at a time
    assert chunk_rows(3 * 256 * 256) * 3 * 256 * 256 * 4 <= 16 << 20


def test_a_job_whose_worker_died_is_resumed_elsewhere_bit_identical(make_runner,
                                                                     runtime_models) -> None:
    """The worker dies after two chunks; another worker sees its beat stand still for the
    lease, claims it, and finishes it from chunk 2: the result is the uninterrupted one."""
    model = runtime_models["tiny"]
    calls = []

    def dies_at_third_chunk(m, z, c):
        calls.append(len(z))
        if len(calls) == 3:
            raise WorkerDied
        return m.generate(z, c)

    a = make_runner(dies_at_third_chunk)
    job_id = a.submit(model, 5000, 3)["job_id"]
    with pytest.raises(WorkerDied):
        a.run(job_id, 1)
    assert a.store.status(job_id)["state"] == "running"
    assert a.store.finished_chunks(job_id) == {0, 1}

    computed = []
    b = make_runner(lambda m, z, c: computed.append(len(z)) or m.generate(z, c))
    b.supervisor.tick(now=100.0)  # first sight of the job's beat
    b.supervisor.tick(now=105.0)  # still within the lease
    assert b.store.status(job_id)["attempt"] == 1
    b.supervisor.tick(now=110.0)  # the lease passed with no beat: resumed as attempt 2
    state = b.store.status(job_id)
    assert state["state"] == "queued" and state["attempt"] == 2 and state["resumed"] == 1
    a.run(job_id, 1)  # the old attempt's message, if it came again, is dropped
    b.run(job_id, 2)
    assert computed == [1024, 1024, 904]  # chunks 2, 3 and 4 only
    assert b.store.status(job_id)["state"] == "completed"
    np.testing.assert_array_equal(result_of(b.store, job_id), expected_images(model, 5000, 3))


def test_a_live_job_is_never_taken_from_its_worker(make_runner, runtime_models) -> None:
    """A starting worker used to fail every running job of the folder. Now a job whose
    worker beats is left alone however many workers watch it."""
    a = make_runner()
    job_id = a.submit(runtime_models["tiny"], 3000, 1)["job_id"]
    a.store.transition(job_id, lambda s: {**s, "state": "running"})
    a.mine.add(job_id)  # as if a's consumer were inside run()
    b = make_runner()  # a second worker starts
    for now in range(0, 100, 5):
        a.supervisor.tick(now=float(now))  # a beats
        b.supervisor.tick(now=float(now))  # b watches
    state = b.store.status(job_id)
    assert state["state"] == "running" and state["attempt"] == 1


def test_only_one_of_many_watchers_resumes_a_job(make_runner, runtime_models) -> None:
    a = make_runner()
    job_id = a.submit(runtime_models["tiny"], 100, 1)["job_id"]
    a.store.transition(job_id, lambda s: {**s, "state": "running"})
    watchers = [make_runner() for _ in range(3)]
    for w in watchers:
        w.supervisor.tick(now=0.0)
    for w in watchers:
        w.supervisor.tick(now=60.0)
    state = a.store.status(job_id)
    assert state["attempt"] == 2 and state["resumed"] == 1
    assert [t.args for t in a.huey.pending()] == [(job_id, 1), (job_id, 2)]


def test_a_queued_job_whose_message_was_lost_is_queued_again(make_runner,
                                                            runtime_models) -> None:
    a = make_runner()
    job_id = a.submit(runtime_models["tiny"], 100, 1)["job_id"]
    a.huey.dequeue()  # a worker took the message and died before it marked the job running
    a.supervisor.tick(now=0.0)
    a.supervisor.tick(now=20.0)
    state = a.store.status(job_id)
    assert state["state"] == "queued" and state["attempt"] == 2
    assert [t.args for t in a.huey.pending()] == [(job_id, 2)]


def test_a_stopping_worker_hands_its_job_back_at_once(make_runner, runtime_models) -> None:
    a = make_runner()
    job_id = a.submit(runtime_models["tiny"], 3000, 5)["job_id"]
    a.generate = lambda m, z, c: (a.stopping.set(), m.generate(z, c))[1]  # stop during chunk 0
    a.run(job_id, 1)
    state = a.store.status(job_id)
    assert state["state"] == "queued" and state["attempt"] == 2
    assert "stopped" in state["note"] and a.store.finished_chunks(job_id) == {0}
    b = make_runner()
    b.run(job_id, 2)
    np.testing.assert_array_equal(result_of(b.store, job_id),
                                  expected_images(runtime_models["tiny"], 3000, 5))


def test_cancel_stops_the_job_and_removes_its_chunks(make_runner, runtime_models) -> None:
    runner = make_runner()
    job_id = runner.submit(runtime_models["tiny"], 5000, 1)["job_id"]
    runner.generate = lambda m, z, c: (runner.cancel(job_id) if len(
        runner.store.finished_chunks(job_id)) == 1 else None, m.generate(z, c))[1]
    runner.run(job_id, 1)
    state = runner.store.status(job_id)
    assert state["state"] == "canceled" and runner.store.finished_chunks(job_id) == set()
    with pytest.raises(RequestError, match="job is already canceled") as err:
        runner.cancel(job_id)
    assert err.value.status == 409
    with pytest.raises(RequestError, match="job is canceled"):
        runner.store.result(job_id)


def test_a_full_queue_is_a_429_with_retry_after(make_runner, runtime_models) -> None:
    runner = make_runner(limits=JobLimits(2, 1 << 30, 3600, 10))
    for _ in range(2):
        runner.submit(runtime_models["tiny"], 10, 1)
    with pytest.raises(RequestError, match=r"queue is full \(2 jobs waiting, limit 2\)") as e:
        runner.submit(runtime_models["tiny"], 10, 1)
    assert e.value.status == 429 and "Retry-After" in e.value.headers


def test_the_disk_quota_is_a_507_before_the_disk_fills(make_runner, runtime_models) -> None:
    runner = make_runner(limits=JobLimits(8, 3 * 1000 * 784, 3600, 10))
    model = runtime_models["tiny"]
    for _ in range(3):
        runner.submit(model, 1000, 1)
    with pytest.raises(RequestError, match="jobs folder is full") as err:
        runner.submit(model, 1, 1)
    assert err.value.status == 507 and runner.counters.get(RESERVED_BYTES) == 3 * 1000 * 784


def test_finished_jobs_expire_and_give_their_bytes_back(make_runner, runtime_models) -> None:
    runner = make_runner(limits=JobLimits(8, 1 << 30, 0, 10))
    job_id = runner.submit(runtime_models["tiny"], 1500, 1)["job_id"]
    runner.run(job_id, 1)
    assert runner.counters.get(RESERVED_BYTES) == 1500 * 784
    runner.supervisor.tick(now=0.0)
    assert runner.counters.get(RESERVED_BYTES) == 0
    assert not (runner.store.folder / job_id).exists()
    with pytest.raises(RequestError, match="no such job") as err:
        runner.store.status(job_id)
    assert err.value.status == 404


def test_a_job_for_a_model_this_worker_lacks_fails_saying_so(make_runner,
                                                             runtime_models) -> None:
    runner = make_runner()
    job_id = runner.store.create(10, 1, "gone", (28, 28))["job_id"]
    runner.run(job_id, 1)
    state = runner.store.status(job_id)
    assert state["state"] == "failed" and "model gone is not loaded" in state["error"]


def test_an_unwritable_result_fails_the_job_not_the_runner(make_runner, runtime_models,
                                                          tmp_path: Path) -> None:
    runner = make_runner()
    model = runtime_models["tiny"]
    blocked = runner.submit(model, 10, 1)["job_id"]
    (tmp_path / blocked / "chunk-00000.npy").mkdir()  # os.replace cannot put a file there
    runner.run(blocked, 1)
    state = runner.store.status(blocked)
    assert state["state"] == "failed" and "could not write the result" in state["error"]
    assert not list((tmp_path / blocked).glob("*.tmp"))  # no partial file left behind
    ok = runner.submit(model, 10, 1)["job_id"]
    runner.run(ok, 1)
    assert runner.store.status(ok)["state"] == "completed"


def test_a_damaged_result_chunk_is_a_410_not_a_wrong_download(make_runner,
                                                              runtime_models) -> None:
    runner = make_runner()
    job_id = runner.submit(runtime_models["tiny"], 1500, 1)["job_id"]
    runner.run(job_id, 1)
    np.save(runner.store.chunk_path(job_id, 1), np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(RequestError, match="result file 1 is missing or damaged") as err:
        runner.store.result(job_id)
    assert err.value.status == 410


def test_bad_job_state_files_are_skipped_with_one_warning_each(make_runner, runtime_models,
                                                               tmp_path: Path,
                                                               caplog) -> None:
    runner = make_runner()
    live = runner.submit(runtime_models["tiny"], 10, 1)["job_id"]
    bad = {"a" * 32: b'{"job_id": "aaaa", "state": "runn', "b" * 32: b"[1, 2]",
           "c" * 32: b"null", "d" * 32: b'{"state": "running"}', "f" * 32: b"\xff\xfe"}
    for job_id, content in bad.items():
        (tmp_path / job_id).mkdir()
        (tmp_path / job_id / "state.json").write_bytes(content)
        (tmp_path / "active" / job_id).touch()
    (tmp_path / ("0" * 32)).mkdir()
    os.mkfifo(tmp_path / ("0" * 32) / "state.json")  # reading it would block for ever
    (tmp_path / "active" / ("0" * 32)).touch()
    skipped = [*bad, "0" * 32]
    with caplog.at_level(logging.WARNING, logger="counterfeit"):
        for now in (0.0, 1.0, 2.0):
            runner.supervisor.tick(now)
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == len(skipped)  # one each, not one per round
    for job_id, message in zip(sorted(skipped), warnings, strict=True):
        assert f"skipped job {job_id}: " in message and "unreadable" in message
    assert runner.store.status(live)["state"] == "queued"
    for job_id in skipped:
        with pytest.raises(RequestError, match="state file is unreadable") as err:
            runner.store.status(job_id)
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


def test_a_queue_that_does_not_answer_stops_start_up_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "queue.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(SystemExit, match=r"queue.sqlite3: the job queue does not answer "
                                         r"\(file is not a database\)"):
        check_or_exit(Settings(jobs_dir=tmp_path, models_dir=tmp_path / "none"))
    with pytest.raises(SystemExit, match=r"COUNTERFEIT_QUEUE_URL: redis://127.0.0.1:1/0: "
                                         r"the job queue does not answer"):
        check_or_exit(Settings(jobs_dir=tmp_path / "ok", queue_url="redis://127.0.0.1:1/0",
                               models_dir=tmp_path / "none"))
