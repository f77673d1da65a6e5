"""The serving comparison of `make bench`: Counterfeit and its peers under the same wrk
loads, each server pinned to one core and wrk to the other, in alternating order, with a
check of every server's images after every measured run.

Contenders (all serve the shipped mnist-mlp generator.onnx, one onnxruntime thread, the
seed contract, the same npy and PNG encoders; loadtests/baselines/):
- counterfeit: `bentoml serve`, one worker, every guard, metric and check it ships with;
- floor / floor (batched): a raw ASGI app, the least Python any server here can spend on a
  request, without and with Counterfeit's own batcher;
- fastapi + torch: the server a user would otherwise write (torch eager, npy only);
- litserve / litserve (batched): LitServe with onnxruntime, without and with its batching.

Each load runs `repetitions` times; in each repetition every contender is started, runs
every load it serves and is stopped, the order of contenders rotated by one each time, so
that a slow minute of the machine falls on different servers. Figures are medians, with
the spread (min–max) beside them.
"""

from __future__ import annotations

import io
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from loadtests import wrk
from loadtests.server import MODELS, free_port, running, serve_command, serve_env, wait_for
from service.contract.card import read_card
from service.images import encode_npy, encode_png_grid, to_uint8
from service.runtime import make_session

MODEL = MODELS / "mnist-mlp"
CARD = read_card(MODEL)
CHECK_SEED = 20141  # the images every server must return for it: G(latent.sample(4, seed))
JOB_IMAGES = 20_000

LOADS = {
    "n1-32": wrk.json_load("n = 1, 32 connections", "/sample", {"n": 1, "format": "npy"}, 32, 1),
    "n1-1": wrk.json_load("n = 1, one client", "/sample", {"n": 1, "format": "npy"}, 1, 1),
    "npy64": wrk.json_load("n = 64 npy, 8 connections", "/sample",
                           {"n": 64, "format": "npy"}, 8, 64),
    "npy256": wrk.json_load("n = 256 npy, 4 connections", "/sample",
                            {"n": 256, "format": "npy"}, 4, 256),
    "png16": wrk.json_load("n = 16 PNG grid, 8 connections", "/sample",
                           {"n": 16, "format": "png"}, 8, 16),
}
SCORE_IMAGES = 64
IMAGES_PER_REQUEST = {**{name: load.images for name, load in LOADS.items()},
                      "score": SCORE_IMAGES}


@dataclass(frozen=True)
class Contender:
    name: str
    command: Callable[[int], list[str]]  # its command line for a port
    env: dict[str, str]
    loads: frozenset[str]  # the LOADS it serves
    png: bool = True
    # waits until the server has finished the requests a run's end left behind (their
    # clients gone): Counterfeit's load shedder counts them, and the next run's first
    # requests would be answered 503 while they are in flight
    settle: Callable[[str], None] | None = None


_IN_FLIGHT = re.compile(r"^counterfeit_requests_in_flight(?:\{[^}]*\})? (\S+)$", re.M)


def no_requests_in_flight(url: str) -> None:
    """Return once Counterfeit's /metrics counts no request in flight."""
    def idle() -> bool:
        found = _IN_FLIGHT.search(httpx.get(f"{url}/metrics", timeout=10).text)
        return found is not None and float(found.group(1)) == 0
    wait_for(idle, f"the server at {url} to finish the last run's requests", timeout=30)


def _python(*args: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, *[a.replace("PORT", str(port)) for a in args]]


def _uvicorn(app: str) -> Callable[[int], list[str]]:
    return _python("-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "PORT", "--loop",
                   "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning")


def contenders(state: Path) -> list[Contender]:
    every = frozenset(LOADS)
    base = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return [
        Contender("counterfeit", serve_command,
                  serve_env(MODELS, state, COUNTERFEIT_WORKERS="1"), every | {"score", "jobs"},
                  settle=no_requests_in_flight),
        Contender("floor", _uvicorn("loadtests.baselines.floor:app"),
                  {**base, "FLOOR_BATCHING": "off"}, every),
        Contender("floor (batched)", _uvicorn("loadtests.baselines.floor:app"),
                  {**base, "FLOOR_BATCHING": "on"}, every),
        Contender("fastapi + torch", _uvicorn("loadtests.baselines.fastapi_torch:app"),
                  {**base, "BASELINE_THREADS": "1"}, every - {"png16"}, png=False),
        Contender("litserve", _python("loadtests/baselines/litserve_ort.py", "--port", "PORT"),
                  base, every),
        Contender("litserve (batched)", _python("loadtests/baselines/litserve_ort.py",
                                                "--port", "PORT", "--batch", "32"), base, every),
    ]


@dataclass
class Row:
    """One load: each contender's runs, and whether its images were right every time."""

    load: str
    runs: dict[str, list[wrk.WrkResult]] = field(default_factory=dict)
    wrong: dict[str, str] = field(default_factory=dict)  # contender -> what was wrong

    def median(self, who: str, what: Callable[[wrk.WrkResult], float]) -> float:
        return statistics.median(what(r) for r in self.runs[who])

    def spread(self, who: str, what: Callable[[wrk.WrkResult], float]) -> tuple[float, float]:
        values = [what(r) for r in self.runs[who]]
        return min(values), max(values)


def reference_images(n: int, seed: int, threads: int = 1) -> np.ndarray:
    session = make_session(MODEL / "generator.onnx", ["CPUExecutionProvider"], threads)
    x = session.run(None, {"z": CARD.latent.sample(n, seed)})[0]
    return np.clip(x, 0.0, 1.0, out=x).reshape(n, *CARD.image.card_shape)


def check_images(url: str, png: bool) -> str | None:
    """What is wrong with the server's images for CHECK_SEED (npy, and the PNG grid where
    it serves one), or None: npy within 1e-5 of onnxruntime in this process (torch's
    kernels differ in the last bits), PNG within one grey level."""
    expected = reference_images(4, CHECK_SEED)
    r = httpx.post(f"{url}/sample", json={"n": 4, "seed": CHECK_SEED, "format": "npy"},
                   timeout=30)
    if r.status_code != 200:
        return f"npy: status {r.status_code}"
    got = np.load(io.BytesIO(r.content))
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5, rtol=0):
        return f"npy: shape {got.shape}, not the seed's images"
    if png:
        r = httpx.post(f"{url}/sample", json={"n": 4, "seed": CHECK_SEED, "format": "png"},
                       timeout=30)
        want = np.asarray(Image.open(io.BytesIO(encode_png_grid(expected, CARD.image))))
        got_png = np.asarray(Image.open(io.BytesIO(r.content))) if r.status_code == 200 \
            else None
        if got_png is None or got_png.shape != want.shape or \
                np.abs(got_png.astype(int) - want).max() > 1:
            return f"png: status {r.status_code}, not the seed's grid"
    return None


def score_load(connections: int = 8) -> tuple[wrk.Load, np.ndarray]:
    """/score of SCORE_IMAGES uint8 images (G's own), and D's logits for them in-process."""
    images = to_uint8(reference_images(SCORE_IMAGES, CHECK_SEED)).reshape(SCORE_IMAGES, -1)
    session = make_session(MODEL / "discriminator.onnx", ["CPUExecutionProvider"], 1)
    x = (images.astype(np.float32) / 255).reshape(SCORE_IMAGES, *CARD.image.shape)
    logits = session.run(None, {"x": x})[0].reshape(-1)
    load = wrk.multipart_load(f"/score, {SCORE_IMAGES} uint8 images, {connections} connections",
                              "/score", "file", "digits.npy", encode_npy(images), connections,
                              SCORE_IMAGES)
    return load, logits


def check_scores(url: str, expected: np.ndarray) -> str | None:
    images = to_uint8(reference_images(SCORE_IMAGES, CHECK_SEED)).reshape(SCORE_IMAGES, -1)
    r = httpx.post(f"{url}/score", files={"file": ("digits.npy", encode_npy(images))},
                   timeout=30)
    if r.status_code != 200:
        return f"status {r.status_code}"
    logits = np.asarray(r.json()["logits"]).reshape(-1)
    return None if np.allclose(logits, expected, atol=1e-4) else "not D's logits"


def run_job(url: str, n: int, seed: int) -> tuple[float, str | None]:
    """Seconds from submitting a job of n images to its completion, and what is wrong with
    its result (its first images against the seed's), or None."""
    started = time.perf_counter()
    job = httpx.post(f"{url}/jobs/submit", json={"n": n, "seed": seed}, timeout=30).json()
    while True:
        status = httpx.post(f"{url}/jobs/status", json={"job_id": job["job_id"]},
                            timeout=30).json()
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if status["state"] != "completed":
        return seconds, f"job {status['state']}: {status.get('error')}"
    result = httpx.post(f"{url}/jobs/result", json={"job_id": job["job_id"]}, timeout=60)
    got = np.load(io.BytesIO(result.content))
    want = to_uint8(reference_images(16, seed))
    if got.shape[0] != n or not np.array_equal(got[:16].reshape(want.shape), want):
        return seconds, "not the seed's images"
    return seconds, None


def pin(core: int | None) -> Callable[[], None] | None:
    return None if core is None else (lambda: os.sched_setaffinity(0, {core}))


def measure(loads: list[str], repetitions: int, seconds: float, server_core: int | None,
            load_core: int | None, progress: Callable[[str], None] = print,
            each_repetition: Callable[[], None] | None = None,
            ) -> tuple[dict[str, Row], list[Contender]]:
    """Every load against every contender that serves it, alternating (module docstring).
    One server runs at a time: an idle one is not idle everywhere (LitServe's batching
    loop polls, a fifth of a core). `each_repetition` runs at the start of each repetition,
    with no server up (the in-process baselines, so that they alternate too)."""
    with tempfile.TemporaryDirectory(prefix="counterfeit-bench-") as tmp:
        state = Path(tmp)
        chosen = contenders(state)
        rows = {name: Row(name) for name in loads}
        score, logits = score_load()
        for rep in range(repetitions):
            if each_repetition is not None:
                each_repetition()
            for c in chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                log = state / f"{port}.log"
                with running(c.command(port), url, log, c.env, pin(server_core)):
                    for name in (name for name in loads if name in c.loads):
                        if name == "jobs":
                            run_job(url, JOB_IMAGES // 4, rep)  # warm-up
                            job_seconds, wrong = run_job(url, JOB_IMAGES, 1000 + rep)
                            result = wrk.WrkResult(1, job_seconds, 0, 0, 0, 0, 0)
                        else:
                            load = score if name == "score" else LOADS[name]
                            wrk.run(url, load, 1, load_core)  # warm-up
                            if c.settle is not None:
                                c.settle(url)
                            result = wrk.run(url, load, seconds, load_core)
                            if c.settle is not None:
                                c.settle(url)
                            wrong = check_scores(url, logits) if name == "score" else \
                                check_images(url, c.png and name == "png16")
                        rows[name].runs.setdefault(c.name, []).append(result)
                        if wrong is not None or result.errors:
                            rows[name].wrong[c.name] = wrong or (
                                f"{result.status_errors} non-2xx, {result.socket_errors} "
                                f"socket errors of {result.requests:,} requests")
                        progress(f"rep {rep + 1}/{repetitions} {c.name} {name}: "
                                 f"{result.requests_per_s:,.1f}/s p99 {result.p99_ms:.1f} ms"
                                 f"{'' if wrong is None else ' WRONG: ' + wrong}")
    return rows, chosen


def cores() -> tuple[int | None, int | None]:
    """(the server's core, the load generator's core): two of the cores this process may
    use, or (None, None) on a one-core machine (nothing pinned; the tables say so)."""
    available = sorted(os.sched_getaffinity(0))
    return (available[-1], available[0]) if len(available) >= 2 else (None, None)

