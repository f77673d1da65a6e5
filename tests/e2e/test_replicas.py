"""Several replicas, shown: a real Redis holds the job queue, two service replicas share it
and one jobs folder, a real HAProxy balances them, all on loopback. The replica running a
job is SIGKILLed mid-job; the other resumes it, and the result downloads through the
balancer and through the survivor, identical to the same job run without interruption.
Needs Debian's redis-server and haproxy (.ci/run installs them)."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest

from loadtests.server import (
    accepts_connections,
    free_port,
    kill_hard,
    running,
    serving,
    started,
    wait_for,
)
from tests.jobs import running_with_chunks, wait_for_job

pytestmark = [
    pytest.mark.replicas,
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="needs Redis: apt-get install redis-server"),
    pytest.mark.skipif(shutil.which("haproxy") is None,
                       reason="needs HAProxy: apt-get install haproxy"),
]

HAPROXY = """\
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch   # a request to a dead replica is sent to the other
frontend counterfeit
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 300ms fall 2 rise 1
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


def _replica_of(worker: str, replicas: dict) -> str:
    """Which replica's process tree holds the worker "host:pid" named in a job's state."""
    pid = int(worker.rsplit(":", 1)[1])
    for name, server in replicas.items():
        tree = psutil.Process(server.pid).children(recursive=True)
        if pid in {p.pid for p in tree}:
            return name
    raise AssertionError(f"worker {worker} is in neither replica")


def test_two_replicas_behind_haproxy_survive_a_sigkill_mid_job(served_models: Path,
                                                               tmp_path: Path) -> None:
    redis_port, lb_port = free_port(), free_port()
    with ExitStack() as stack:
        redis = stack.enter_context(started(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], tmp_path / "redis.log"))
        wait_for(accepts_connections(redis_port), "redis-server", redis, tmp_path / "redis.log",
                 timeout=30)
        shared = {"COUNTERFEIT_QUEUE_URL": f"redis://127.0.0.1:{redis_port}/0",
                  "COUNTERFEIT_JOBS_DIR": str(tmp_path / "jobs"),
                  "COUNTERFEIT_JOB_LEASE_SECONDS": "2", "COUNTERFEIT_DEFAULT_MODEL": "tiny"}
        replicas = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replicas[name] = stack.enter_context(serving(served_models, tmp_path / name,
                                                         **shared))
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=lb_port, **{
            name: server.url.rsplit(":", 1)[1] for name, server in replicas.items()}))
        balancer = f"http://127.0.0.1:{lb_port}"
        stack.enter_context(running(["haproxy", "-f", str(config), "-db"], balancer,
                                    tmp_path / "haproxy.log", timeout=30))
        client = stack.enter_context(httpx.Client(base_url=balancer, timeout=30))

        n, seed = 100_000, 77
        job_id = client.post("/jobs/submit", json={"n": n, "seed": seed}).json()["job_id"]
        status = running_with_chunks(client, job_id, 2)
        victim = _replica_of(status["worker"], replicas)
        kill_hard(replicas[victim].pid)
        survivor = replicas["b" if victim == "a" else "a"]

        final = wait_for_job(client, job_id)
        assert final["state"] == "completed" and final["attempt"] == 2, final
        assert _replica_of(final["worker"], {"survivor": survivor}) == "survivor"
        through_balancer = client.post("/jobs/result", json={"job_id": job_id})
        direct = httpx.post(f"{survivor.url}/jobs/result", json={"job_id": job_id}, timeout=30)
        assert through_balancer.status_code == direct.status_code == 200
        assert through_balancer.content == direct.content

        again = client.post("/jobs/submit", json={"n": n, "seed": seed}).json()["job_id"]
        assert wait_for_job(client, again)["attempt"] == 1
        uninterrupted = client.post("/jobs/result", json={"job_id": again})
        assert uninterrupted.content == through_balancer.content
        assert len(uninterrupted.content) > n * 28 * 28
