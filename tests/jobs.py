"""Waiting for a job, for any client with `.post(route, json=...)`: starlette's TestClient
in-process or an `httpx.Client(base_url=...)` against a real server."""

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
