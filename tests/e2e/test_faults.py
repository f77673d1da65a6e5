"""Faults against a real `bentoml serve`: a worker killed under load, a job whose result
cannot be written. (Broken models and bad settings at start-up: test_serve.py.)"""

from __future__ import annotations

import io
import resource
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil

from loadtests.server import Server, serving
from tests.jobs import wait_for_job

CLIENTS = 4


def _workers(server: Server) -> list[psutil.Process]:
    """The live worker processes (a killed one is a zombie until the arbiter reaps it)."""
    workers = []
    for p in psutil.Process(server.pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker" in " ".join(p.cmdline()):
                workers.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return workers


def test_a_worker_killed_under_load_is_replaced_and_few_requests_fail(
        served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, workers=2, COUNTERFEIT_DEFAULT_MODEL="tiny") as server:
        outcomes: list[tuple[float, str]] = []  # (time, status code or error name)
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    try:
                        r = http.post(f"{server.url}/sample", json={"n": 2, "format": "npy"})
                        outcome = str(r.status_code)
                        if r.status_code == 200 and np.load(io.BytesIO(r.content)).shape \
                                != (2, 28, 28):
                            outcome = "200 with wrong images"
                    except httpx.HTTPError as err:
                        outcome = type(err).__name__
                    outcomes.append((time.monotonic(), outcome))

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            while len(outcomes) < 20:  # load is flowing
                time.sleep(0.05)
            before = _workers(server)
            assert len(before) == 2
            before[0].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            deadline = killed_at + 60
            while True:  # the arbiter starts a new worker
                now = {p.pid for p in _workers(server)}
                if len(now) == 2 and before[0].pid not in now:
                    break
                assert time.monotonic() < deadline, "the killed worker was never replaced"
                time.sleep(0.1)
            replaced_at = time.monotonic()
            while sum(t > replaced_at for t, _ in outcomes) < 40:  # load after the restart
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
        failures = Counter(o for _, o in outcomes if o != "200")
        # at most the request each client had in flight on the dead worker's connection
        assert sum(failures.values()) <= CLIENTS, failures
        assert all(o == "200" for t, o in outcomes if t > replaced_at + 1.0)
        assert httpx.get(f"{server.url}/readyz").status_code == 200


FILE_SIZE_LIMIT = 600_000  # bytes: below one chunk of 1,024 MNIST images (803 kB)


def _limit_file_size() -> None:
    # stands in for a full disk: a write past 600 kB fails (EFBIG; Python ignores SIGXFSZ)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_job_whose_result_cannot_be_written_fails_clearly_and_the_service_stays_up(
        served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, preexec_fn=_limit_file_size,
                 COUNTERFEIT_DEFAULT_MODEL="tiny") as server:
        url = server.url
        with httpx.Client(base_url=url, timeout=60) as client:
            job_id = client.post("/jobs/submit", json={"n": 100_000, "seed": 3}).json()["job_id"]
            state = wait_for_job(client, job_id)
            assert state["state"] == "failed"
            assert "could not write the result: File too large" in state["error"]
            result = client.post("/jobs/result", json={"job_id": job_id})
            assert result.status_code == 409 and "File too large" in result.json()["error"]
            assert not list((tmp_path / "jobs" / job_id).glob("chunk-*")), "a partial file was left"
            small = client.post("/jobs/submit", json={"n": 10, "seed": 1}).json()["job_id"]
            assert wait_for_job(client, small)["state"] == "completed"
            images = np.load(io.BytesIO(client.post("/jobs/result", json={"job_id": small})
                                        .content))
        assert images.shape == (10, 28, 28)
