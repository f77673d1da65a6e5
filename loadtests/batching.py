"""Single-sample requests from many concurrent clients, batching on vs off: starts
`bentoml serve` once per setting and reports requests/s, p50, p99 and errors.

    .venv/bin/python loadtests/batching.py [--users 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.server import serving_shipped  # noqa: E402


def hammer(url: str, users: int, seconds: float) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def user(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            k = 0
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = client.post(f"{url}/sample", json={"n": 1, "seed": i * 100_000 + k,
                                                       "format": "npy"})
                dt = time.perf_counter() - t
                k += 1
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started, sorted(latencies), errors[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    settings = {"off": {"COUNTERFEIT_BATCHING": "off"},
                "on, wait 2 ms": {"COUNTERFEIT_BATCHING": "on", "COUNTERFEIT_BATCH_WAIT_MS": "2"},
                "on, always wait 2 ms": {"COUNTERFEIT_BATCHING": "on",
                                         "COUNTERFEIT_BATCH_WAIT_MS": "2",
                                         "COUNTERFEIT_BATCH_WAIT_ALWAYS": "on"},
                "on, wait 0 ms": {"COUNTERFEIT_BATCHING": "on", "COUNTERFEIT_BATCH_WAIT_MS": "0"}}
    print(f"| batching | requests/s | p50 ms | p99 ms | errors |  ({args.users} users, "
          f"n=1 npy, {args.seconds:.0f} s)")
    print("| --- | --- | --- | --- | --- |")
    for label, env in settings.items():
        with serving_shipped(**env) as server:
            hammer(server.url, args.users, 2)  # warm-up
            wall, lat, errors = hammer(server.url, args.users, args.seconds)
        print(f"| {label} | {len(lat) / wall:.0f} | {lat[len(lat) // 2] * 1e3:.1f} | "
              f"{lat[int(0.99 * len(lat))] * 1e3:.1f} | {errors} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
