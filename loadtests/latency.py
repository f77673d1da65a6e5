"""Start-up time and single-client latency of the service: starts `bentoml serve` on the
shipped models, waits for /readyz, then times sequential /sample requests.

    .venv/bin/python loadtests/latency.py [--requests 200] [--port 3017]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--port", type=int, default=3017)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "bentoml", "serve",
                               "service.service:Counterfeit", "--host", "127.0.0.1",
                               "--port", str(args.port)], cwd=REPO, env=os.environ,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if server.poll() is not None:
                print("the server exited; run `make serve` to see why", file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 120:
                print("not ready after 120 s", file=sys.stderr)
                return 1
            time.sleep(0.05)
        ready = time.perf_counter() - started
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
    finally:
        server.terminate()
        server.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
