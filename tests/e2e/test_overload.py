"""Hostile load against a real `bentoml serve`: a full worker sheds at once (503 with
Retry-After) and keeps its health checks, a huge request head is refused without being
read, idle connections neither exhaust the worker's descriptors nor stay open, and a
request whose client has gone is not computed (docs/reliability.md, "Overload and
connection limits")."""

from __future__ import annotations

import re
import resource
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil

from loadtests.server import Server, serving

# n=1 requests wait this long in the batcher for more rows, alone or not: each holds its
# slot ~1 s
SLOW = {"COUNTERFEIT_DEFAULT_MODEL": "tiny", "COUNTERFEIT_BATCH_WAIT_MS": "1000",
        "COUNTERFEIT_BATCH_WAIT_ALWAYS": "on"}


def _metric(text: str, name: str, labels: str = "") -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when absent)."""
    pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(value) for found, value in pattern.findall(text) if labels in found)


def _wait_for_metric(http: httpx.Client, name: str, labels: str, at_least: float,
                     timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = http.get("/metrics").text
        if _metric(text, name, labels) >= at_least:
            return text
        assert time.monotonic() < deadline, f"{name}{{{labels}}} never reached {at_least}"
        time.sleep(0.05)


def _service_rss(server: Server) -> float:
    """MiB held by the server and its workers."""
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    return sum(p.memory_info().rss for p in family) / 2**20


def test_a_full_worker_answers_503_with_retry_after_at_once_but_never_its_health_checks(
        served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, COUNTERFEIT_MAX_IN_FLIGHT="2", **SLOW) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        stop = threading.Event()
        looped: list[int] = []

        def hold_a_slot() -> None:  # back-to-back requests of ~1 s each
            with httpx.Client(base_url=server.url, timeout=30) as own:
                while not stop.is_set():
                    looped.append(own.post("/sample", json={"n": 1}).status_code)

        holders = [threading.Thread(target=hold_a_slot) for _ in range(2)]
        for t in holders:
            t.start()
        try:
            full = _wait_for_metric(http, "counterfeit_requests_in_flight", "", 2)
            assert _metric(full, "counterfeit_requests_in_flight") == 2  # /metrics answered
            assert http.get("/livez").status_code == 200
            assert http.get("/readyz").status_code == 200
            shed = []
            for _ in range(20):
                started = time.monotonic()
                r = http.post("/sample", json={"n": 1})
                if r.status_code == 503:
                    shed.append((time.monotonic() - started, r))
        finally:
            stop.set()
            for t in holders:
                t.join()
        assert len(shed) >= 10, "a full worker took the requests in"
        for seconds, r in shed:
            assert seconds < 1.0, f"a refusal took {seconds:.2f} s"
            assert r.headers["retry-after"] == "1"
            assert r.json()["field"] == "server" and "busy" in r.json()["error"]
        assert set(looped) == {200}
        assert http.post("/sample", json={"n": 1}).status_code == 200
        counted = _metric(http.get("/metrics").text, "counterfeit_requests_shed_total")
        assert counted >= len(shed)
        assert "Traceback" not in server.log.read_text()


def _send_head(port: int, size: int) -> tuple[socket.socket, str]:
    """A request whose one header is `size` bytes and never ends; what came back: the
    status line, or how the connection ended."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(b"POST /sample HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
        chunk = b"a" * (1 << 20)
        for _ in range(size // len(chunk)):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        return s, s.recv(65536).split(b"\r\n")[0].decode() or "closed"
    except OSError as err:  # refused while still sending
        return s, type(err).__name__


def test_a_64_mib_request_head_is_refused_and_not_held_in_memory(
        served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, COUNTERFEIT_DEFAULT_MODEL="tiny") as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        port = int(server.url.rsplit(":", 1)[1])
        assert http.post("/sample", json={"n": 1}).status_code == 200
        rss = _service_rss(server)
        held = [_send_head(port, 64 << 20) for _ in range(4)]  # before: +60 MiB each
        for _, outcome in held:
            assert outcome in ("HTTP/1.1 431 Request Header Fields Too Large", "closed",
                               "ConnectionResetError", "BrokenPipeError"), outcome
        assert any(o.startswith("HTTP/1.1 431") for _, o in held)
        assert _service_rss(server) - rss < 64
        assert http.post("/sample", json={"n": 1}).status_code == 200
        for s, _ in held:
            s.close()


OPEN_FILES = 512  # the workers' descriptor limit: 1,000 idle connections would take them all


def _few_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def test_a_thousand_idle_connections_neither_stop_the_service_nor_stay_open(
        served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, preexec_fn=_few_open_files,
                 COUNTERFEIT_IDLE_TIMEOUT_SECONDS="1", COUNTERFEIT_DEFAULT_MODEL="tiny"
                 ) as server:
        port = int(server.url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(1000)]
        try:
            started = time.monotonic()
            r = httpx.post(f"{server.url}/sample", json={"n": 1}, timeout=30)
            assert r.status_code == 200 and time.monotonic() - started < 5
            deadline = time.monotonic() + 30
            for s in idle:  # each is closed by the server: for room, or once idle 1 s
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    assert s.recv(1) == b"", "an idle connection got data"
                except ConnectionResetError:
                    pass
        finally:
            for s in idle:
                s.close()
        assert httpx.post(f"{server.url}/sample", json={"n": 1}).status_code == 200
        assert "is over what the open-file limit" in server.log.read_text()


def test_a_request_whose_client_has_gone_is_not_computed(served_models: Path,
                                                        tmp_path: Path) -> None:
    with serving(served_models, tmp_path, **SLOW) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        port = int(server.url.rsplit(":", 1)[1])
        body = b'{"n": 4, "format": "npy"}'
        with socket.create_connection(("127.0.0.1", port)) as s:  # asks, and leaves at once
            s.sendall(b"POST /sample HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: "
                      b"application/json\r\ncontent-length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)
        text = _wait_for_metric(http, "counterfeit_requests_abandoned_total",
                                'work="skipped"', 1)
        assert _metric(text, "counterfeit_images_generated_total") == 0
        assert _metric(text, "counterfeit_requests_abandoned_total", 'work="done"') == 0
        assert _metric(text, "counterfeit_requests_in_flight") == 0
        assert http.post("/sample", json={"n": 4}).status_code == 200  # the counter counts
        after = http.get("/metrics").text
        assert _metric(after, "counterfeit_images_generated_total", 'endpoint="sample"') == 4
        assert "Traceback" not in server.log.read_text()
