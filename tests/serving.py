"""Start a real `bentoml serve` for the end-to-end tests and wait until it is ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "bentoml", "serve", "service.service:Counterfeit",
         "--host", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(models: Path, state: Path, **settings: str) -> dict[str, str]:
    return {**os.environ, "COUNTERFEIT_MODELS_DIR": str(models),
            "COUNTERFEIT_JOBS_DIR": str(state / "jobs"), "BENTOML_HOME": str(state / "bentoml"),
            "COUNTERFEIT_DEVICE": "cpu", "PYTHONUNBUFFERED": "1", **settings}


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the server never became ready"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


@dataclass(frozen=True)
class Server:
    url: str
    pid: int  # the `bentoml serve` arbiter; its children are the workers
    log: Path


@contextmanager
def serving(models: Path, state: Path, workers: int = 1,
            preexec_fn: Callable[[], None] | None = None) -> Iterator[Server]:
    """The service on a free port, stopped on exit; its log is state/serve-PORT.log."""
    port = free_port()
    log = state / f"serve-{port}.log"  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port)], cwd=REPO,
        env=serve_env(models, state, COUNTERFEIT_WORKERS=str(workers)),
        stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield Server(url, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
