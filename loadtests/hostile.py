"""Hostile load against a fresh service (or --url): overload, huge headers, idle
connections. Each subcommand prints what the service did, for docs/reliability.md.

    .venv/bin/python loadtests/hostile.py overload --clients 250 --n 1024 --duration 20
    .venv/bin/python loadtests/hostile.py headers --size-mib 64 --unfinished 8
    .venv/bin/python loadtests/hostile.py idle --connections 1000 --wait 15

Without --url each starts the shipped models with `serving_shipped` (COUNTERFEIT_*
variables in the environment are passed on) and stops it at the end. The clients speak
HTTP/1.1 over raw sockets: 250 httpx clients would take the cores the server needs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.server import serving_shipped  # noqa: E402

_GENERATED = re.compile(r'^counterfeit_images_generated_total\{[^}]*\} ([0-9.e+]+)$', re.M)


def request_bytes(path: str, body: dict | None = None, host: str = "127.0.0.1",
                  extra: bytes = b"") -> bytes:
    """One HTTP/1.1 request: a JSON POST with `body`, a GET without."""
    if body is None:
        return f"GET {path} HTTP/1.1\r\nhost: {host}\r\n".encode() + extra + b"\r\n"
    payload = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n").encode() + extra + b"\r\n" + payload


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request on an open connection; its status, headers and body."""
    writer.write(raw)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin1")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ", 2)[1]), headers, body


def images_generated(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=60).text
    return sum(float(v) for v in _GENERATED.findall(text))


def worker_rss_mib(pid: int | None) -> float | None:
    """RSS of the server and its workers, MiB (None without a pid)."""
    if pid is None:
        return None
    total = 0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.contextmanager
def target(url: str | None) -> Iterator[tuple[str, int | None]]:
    """The service's URL and pid (None for --url); then this process gets a higher CPU
    priority than the server it started: the clients stand for machines of their own, and
    on a small shared machine must not wait for a core behind the server they measure
    (raising it needs root; without, it stays as it is)."""
    if url:
        yield url.rstrip("/"), None
        return
    with serving_shipped() as server:
        with contextlib.suppress(OSError):
            os.nice(-10)
        yield server.url, server.pid


# --- overload ------------------------------------------------------------------------

async def _client(host: str, port: int, raw: bytes, n: int, deadline: float, timeout: float,
                  results: list[tuple[str, float, dict[str, str]]]) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            status, headers, _ = await asyncio.wait_for(exchange(*conn, raw), timeout)
            outcome = str(status)
            if headers.get("connection", "").lower() == "close":
                conn[1].close()
                conn = None
        except asyncio.TimeoutError:
            outcome, headers = "timeout", {}
        except (OSError, asyncio.IncompleteReadError, ValueError) as err:
            outcome, headers = type(err).__name__, {}
        if outcome == "timeout" or not outcome.isdigit():
            if conn is not None:  # the client gives up: its connection closes
                conn[1].close()
                conn = None
        results.append((outcome, time.monotonic() - started, headers))
        if outcome in ("503", "429"):  # a polite client waits as told
            await asyncio.sleep(float(headers.get("retry-after", "1")))
    if conn is not None:
        conn[1].close()


def _probe(url: str, seconds: float, out: multiprocessing.Queue) -> None:
    """GET /livez every 0.5 s for `seconds`, in a process of its own; its latencies."""
    latencies = []
    until = time.monotonic() + seconds
    with httpx.Client(timeout=60) as http:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                http.get(f"{url}/livez")
            except httpx.HTTPError:
                pass
            latencies.append(time.monotonic() - started)
            time.sleep(0.5)
    out.put(latencies)


def overload(args: argparse.Namespace) -> None:
    with target(args.url) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        raw = request_bytes("/sample", {"n": args.n, "seed": 1})
        httpx.post(f"{url}/sample", json={"n": args.n})  # warm up
        before = images_generated(url)
        results: list[tuple[str, float, dict[str, str]]] = []
        probed: multiprocessing.Queue = multiprocessing.Queue()
        probe = multiprocessing.Process(target=_probe, args=(url, args.duration, probed))

        async def run() -> None:
            deadline = time.monotonic() + args.duration
            await asyncio.gather(
                *(_client(host, int(port), raw, args.n, deadline, args.timeout, results)
                  for _ in range(args.clients)))

        started = time.monotonic()
        probe.start()
        asyncio.run(run())
        ended = time.monotonic()
        livez = probed.get()
        probe.join()
        t = time.monotonic()
        first = httpx.post(f"{url}/sample", json={"n": 1}, timeout=600)
        first_after = time.monotonic() - t
        # the server may still be computing what the load left behind: wait until it stops
        last, stable_since = images_generated(url), time.monotonic()
        while time.monotonic() - stable_since < 3:
            time.sleep(0.5)
            now = images_generated(url)
            if now != last:
                last, stable_since = now, time.monotonic()
        generated = last - before - 1  # the request after the load made one
    outcomes = Counter(o for o, _, _ in results)
    ok = [s for o, s, _ in results if o == "200"]
    shed = [(s, h) for o, s, h in results if o in ("503", "429")]
    delivered = outcomes["200"] * args.n
    print(f"overload: {args.clients} clients, POST /sample n={args.n}, {args.duration:.0f} s, "
          f"client timeout {args.timeout:.0f} s (load ran {ended - started:.1f} s)")
    print(f"  outcomes: {dict(outcomes.most_common())} of {len(results)} requests")
    print(f"  200: p50 {percentile(ok, .5):.2f} s, p99 {percentile(ok, .99):.2f} s, "
          f"{len(ok) / (ended - started):.1f}/s")
    if shed:
        times = [s for s, _ in shed]
        print(f"  shed: p50 {percentile(times, .5) * 1e3:.0f} ms, p99 "
              f"{percentile(times, .99) * 1e3:.0f} ms, max {max(times) * 1e3:.0f} ms; "
              f"Retry-After on {sum('retry-after' in h for _, h in shed)} of {len(shed)}")
    print(f"  GET /livez during the load: p50 {percentile(livez, .5) * 1e3:.0f} ms, max "
          f"{max(livez, default=float('nan')) * 1e3:.0f} ms over {len(livez)} probes")
    print(f"  images generated {generated:.0f}, delivered {delivered}: "
          f"{max(0.0, generated - delivered):.0f} "
          f"({max(0.0, generated - delivered) / max(generated, 1):.0%}) for clients that had gone")
    print(f"  first request after the load: {first.status_code} in {first_after:.2f} s")


# --- headers -------------------------------------------------------------------------

def _send_huge_header(host: str, port: int, size: int, finish: bool) -> tuple[socket.socket,
                                                                             int, str]:
    """Send a request whose one header is `size` bytes; how many bytes went and what came
    back (the status line, or how the connection ended)."""
    s = socket.create_connection((host, port))
    s.sendall(b"POST /sample HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
    sent, chunk = 0, b"a" * (1 << 20)
    try:
        while sent < size:
            s.sendall(chunk[:min(len(chunk), size - sent)])
            sent += min(len(chunk), size - sent)
        if not finish:
            return s, sent, "unfinished"
        s.sendall(b"\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"n\": 1}")
    except OSError as err:
        return s, sent, f"connection ended while sending ({type(err).__name__})"
    s.settimeout(30)
    try:
        reply = s.recv(65536)
    except OSError as err:
        return s, sent, f"connection ended ({type(err).__name__})"
    return s, sent, reply.split(b"\r\n", 1)[0].decode("latin1") or "closed without an answer"


def headers(args: argparse.Namespace) -> None:
    size = int(args.size_mib * 2**20)
    with target(args.url) as (url, pid):
        host, port = url.removeprefix("http://").split(":")
        rss0 = worker_rss_mib(pid)
        t = time.monotonic()
        s, sent, reply = _send_huge_header(host, int(port), size, finish=True)
        s.close()
        print(f"headers: one {args.size_mib:g} MiB header: {reply!r} after {sent / 2**20:.1f} "
              f"MiB sent, {time.monotonic() - t:.2f} s")
        r = httpx.post(f"{url}/sample", json={"n": 1}, timeout=60)
        print(f"  then POST /sample: {r.status_code}")
        held = []
        for _ in range(args.unfinished):
            s, sent, reply = _send_huge_header(host, int(port), size, finish=False)
            held.append(s)
        time.sleep(1)  # let the server read what it will
        rss1 = worker_rss_mib(pid)
        t = time.monotonic()
        r = httpx.post(f"{url}/sample", json={"n": 1}, timeout=60)
        print(f"  {args.unfinished} unfinished {args.size_mib:g} MiB headers held open: "
              f"server RSS {rss0:.0f} -> {rss1:.0f} MiB; POST /sample meanwhile: "
              f"{r.status_code} in {time.monotonic() - t:.2f} s")
        for s in held:
            s.close()


# --- idle connections ------------------------------------------------------------------

def idle(args: argparse.Namespace) -> None:
    with target(args.url) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        conns = []
        t = time.monotonic()
        for _ in range(args.connections):
            try:
                s = socket.create_connection((host, int(port)), timeout=10)
            except OSError as err:
                print(f"  connection {len(conns) + 1} failed: {err}")
                break
            if args.partial:
                s.sendall(b"GET /models HTTP/1.1\r\n")  # a request head never finished
            conns.append(s)
        print(f"idle: {len(conns)} {'half-sent' if args.partial else 'idle'} connections "
              f"opened in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        try:
            r = httpx.post(f"{url}/sample", json={"n": 1}, timeout=30)
            print(f"  POST /sample while they are open: {r.status_code} in "
                  f"{time.monotonic() - t:.2f} s")
        except httpx.HTTPError as err:
            print(f"  POST /sample while they are open: {type(err).__name__} after "
                  f"{time.monotonic() - t:.2f} s")
        deadline = time.monotonic() + args.wait
        open_ = set(range(len(conns)))
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                conns[i].setblocking(False)
                try:
                    if conns[i].recv(4096) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
            time.sleep(0.5)
        print(f"  closed by the server within {args.wait:.0f} s: {len(conns) - len(open_)} of "
              f"{len(conns)}")
        for s in conns:
            s.close()
        r = httpx.post(f"{url}/sample", json={"n": 1}, timeout=30)
        print(f"  POST /sample after: {r.status_code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running service (default: start one)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overload", help="many clients of large /sample requests")
    p.add_argument("--clients", type=int, default=250)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=30.0, help="each client gives up after")
    p.set_defaults(run=overload)
    p = sub.add_parser("headers", help="a huge request header, then unfinished ones")
    p.add_argument("--size-mib", type=float, default=64.0)
    p.add_argument("--unfinished", type=int, default=8)
    p.set_defaults(run=headers)
    p = sub.add_parser("idle", help="many connections that send nothing")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--partial", action="store_true", help="send half a request head")
    p.add_argument("--wait", type=float, default=15.0, help="seconds to watch them close")
    p.set_defaults(run=idle)
    args = parser.parse_args()
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
