"""Start-up time and single-client latency of the service: starts `bentoml serve` on the
shipped models, waits for /readyz, then times sequential /sample requests.

    .venv/bin/python loadtests/latency.py [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.server import serving_shipped  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    with serving_shipped() as server:
        ready = time.perf_counter() - started
        url = server.url
        provider = next(iter(httpx.post(f"{url}/models", json={}).json()["models"].values())
                        )["provider"]
        print(f"ready after {ready:.2f} s (process start to /readyz 200), provider {provider}")
        with httpx.Client() as client:
            for n in (1, 64):
                body = {"n": n, "seed": 0, "format": "npy"}
                for _ in range(10):  # warm the connection and the pools
                    client.post(f"{url}/sample", json=body)
                times = []
                for _ in range(args.requests):
                    t = time.perf_counter()
                    r = client.post(f"{url}/sample", json=body)
                    times.append(time.perf_counter() - t)
                    r.raise_for_status()
                times.sort()
                print(f"/sample n={n:<3} npy: p50 {statistics.median(times) * 1e3:.2f} ms, "
                      f"p90 {times[int(0.9 * len(times))] * 1e3:.2f} ms over {len(times)} "
                      "sequential requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
