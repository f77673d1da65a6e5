"""Waiting for a job (finished, or running part-way), for any client with
`.post(route, json=...)`: starlette's TestClient in-process or an
`httpx.Client(base_url=...)` against a real server."""

from __future__ import annotations

import time
from typing import Any


def wait_for_job(client: Any, job_id: str, timeout: float = 120) -> dict:
    """The job's final status (completed or failed); fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (status := client.post("/jobs/status", json={"job_id": job_id}).json())["state"] \
            in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {status['state']}: {status}"
        time.sleep(0.05)
    return status


def running_with_chunks(client: Any, job_id: str, chunks: int, timeout: float = 60) -> dict:
    """The job's status once it is running with at least `chunks` chunks done (to stop
    something mid-job); fails the test if it finishes first or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.post("/jobs/status", json={"job_id": job_id}).json()
        if status["state"] == "running" and status["done"] >= chunks * status["chunk_rows"]:
            return status
        assert status["state"] in ("queued", "running"), status
        assert time.monotonic() < deadline, status
        time.sleep(0.01)
