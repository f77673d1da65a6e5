"""The one place that starts a Counterfeit service (or any HTTP server with a /readyz),
waits until it is ready and stops it: the end-to-end tests, the load tests and the
benchmarks all go through here, so they all serve the same way.

    with serving(models, state) as server:      # a fresh `bentoml serve` on a free port
        httpx.post(f"{server.url}/sample", json={"n": 4})

`serving_shipped()` is the same over the shipped models with a throw-away state folder
(what the load tests measure); `running()` starts any other server (the baselines) under
the same start, readiness and stop rules.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
# the shipped models' start-up (check, load, warm up) takes a few seconds; a slow or busy
# machine many times that
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
LOG_TAIL_BYTES = 4000


def free_port() -> int:
    """A loopback port nobody listens on now: each server gets its own, so runs and tests
    never collide with each other or with a `make serve` on 3000."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int) -> list[str]:
    """The `bentoml serve` command line for the service on 127.0.0.1:port (run it with
    cwd=REPO, so that `service.service` is importable)."""
    return [sys.executable, "-m", "bentoml", "serve", "service.service:Counterfeit",
            "--host", "127.0.0.1", "--port", str(port)]


def serve_env(models: Path, state: Path, **settings: str) -> dict[str, str]:
    """The environment of a served Counterfeit: the models in `models`, everything it
    writes (job results, BentoML's home) under `state`, CPU, unbuffered logs; `settings`
    (COUNTERFEIT_* variables) override; no other COUNTERFEIT_ variable of this process is
    passed on (an in-process test's settings must not leak into a served one). BentoML
    never posts usage statistics from here, whatever the settings say."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERFEIT_")}
    return {**inherited, "COUNTERFEIT_MODELS_DIR": str(models),
            "COUNTERFEIT_JOBS_DIR": str(state / "jobs"), "BENTOML_HOME": str(state / "bentoml"),
            "COUNTERFEIT_DEVICE": "cpu", "PYTHONUNBUFFERED": "1", **settings,
            "BENTOML_DO_NOT_TRACK": "True"}


def log_tail(log: Path | None) -> str:
    """The end of a server's log, to say why it failed ('' without one)."""
    if log is None or not log.is_file():
        return ""
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
        return f.read().decode("utf-8", "replace")


def wait_for(ready: Callable[[], bool], what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None, timeout: float = READY_TIMEOUT) -> None:
    """Return once `ready()` is true. RuntimeError, with the log's tail, when `proc` exits
    first (a server that cannot start says why there) or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before it was ready; its "
                               f"log ends:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s; its log "
                               f"ends:\n{log_tail(log)}")
        time.sleep(0.1)


def wait_ready(url: str, proc: subprocess.Popen | None = None, log: Path | None = None,
               timeout: float = READY_TIMEOUT, ready_path: str = "/readyz") -> None:
    """Return once GET url + ready_path answers 200 (see wait_for)."""
    def answers() -> bool:
        try:
            return httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200
        except httpx.TransportError:
            return False
    wait_for(answers, f"the server at {url}", proc, log, timeout)


def accepts_connections(port: int) -> Callable[[], bool]:
    """A readiness check for a TCP server on 127.0.0.1:port (Redis, PostgreSQL, ...)."""
    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    return check


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a server and every process under it. `bentoml serve`'s workers run in their own
    sessions, so neither a signal to the arbiter's process group nor the arbiter's own exit
    reaches them for sure: their pids are collected first, the arbiter is terminated, and
    whatever of them is still alive after `timeout` s is killed."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    _kill(alive)


def _kill(processes: list[psutil.Process]) -> None:
    """SIGKILL each process (those already gone are skipped) and reap them."""
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)


def kill_hard(pid: int) -> None:
    """SIGKILL a server and every process under it at once, as a power cut or the OOM
    killer would: nothing gets to clean up."""
    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _kill(family)


@contextmanager
def running(command: list[str], url: str, log: Path, env: dict[str, str] | None = None,
            preexec_fn: Callable[[], None] | None = None, timeout: float = READY_TIMEOUT,
            ready_path: str = "/readyz") -> Iterator[subprocess.Popen]:
    """Any HTTP server that answers 200 at `ready_path` once ready: `command` started in
    REPO, its output in `log` (a file, not a pipe: a full pipe nobody reads would block the
    server), ready at `url` on entry, stopped with all its children on exit."""
    with started(command, log, env, preexec_fn) as proc:
        wait_ready(url, proc, log, timeout, ready_path)
        yield proc


@contextmanager
def started(command: list[str], log: Path, env: dict[str, str] | None = None,
            preexec_fn: Callable[[], None] | None = None) -> Iterator[subprocess.Popen]:
    """`command` started in REPO with its output in `log` (a file, not a pipe: a full pipe
    nobody reads would block it), stopped with all its children on exit."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    try:
        yield proc
    finally:
        stop(proc)


@dataclass(frozen=True)
class Server:
    url: str
    pid: int  # the `bentoml serve` arbiter; its children are the workers
    log: Path


@contextmanager
def serving(models: Path, state: Path, workers: int = 1,
            preexec_fn: Callable[[], None] | None = None, **settings: str) -> Iterator[Server]:
    """The service over `models` on a free port with `workers` workers and `settings`
    (COUNTERFEIT_* variables), ready on entry and stopped on exit; it writes under `state`
    and logs to state/serve-PORT.log. `preexec_fn` runs in the server before it starts
    (e.g. to set a resource limit)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = state / f"serve-{port}.log"
    env = serve_env(models, state, **{"COUNTERFEIT_WORKERS": str(workers), **settings})
    with running(serve_command(port), url, log, env, preexec_fn) as proc:
        yield Server(url, proc.pid, log)


@contextmanager
def serving_shipped(**settings: str) -> Iterator[Server]:
    """The shipped models (models/) served as the load tests and benchmarks measure them,
    with a state folder deleted on exit. COUNTERFEIT_DEVICE and COUNTERFEIT_WORKERS, when
    set in the environment, are kept (as `make serve` would), under `settings`."""
    kept = {k: os.environ[k] for k in ("COUNTERFEIT_DEVICE",) if k in os.environ}
    workers = int(os.environ.get("COUNTERFEIT_WORKERS", "1"))
    with tempfile.TemporaryDirectory(prefix="counterfeit-serve-") as state, \
            serving(MODELS, Path(state), workers, **{**kept, **settings}) as server:
        yield server
