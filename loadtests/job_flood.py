"""Requests under a flood of jobs: queue `--jobs` jobs of `--n` images on a fresh service
(the shipped models, one worker), then time `--requests` POST /sample (n=16) from
`--clients` concurrent clients while the jobs run, and print p50/p99/max and the status
codes. With no jobs it is the baseline of the same run.

    .venv/bin/python loadtests/job_flood.py --jobs 64 --n 100000
    .venv/bin/python loadtests/job_flood.py --jobs 0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.server import serving_shipped  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--n", type=int, default=100_000, help="images per job")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    args = parser.parse_args()

    # a quota the flood cannot reach: this measures requests beside jobs, not the quota
    with serving_shipped(COUNTERFEIT_MAX_QUEUED_JOBS=str(max(args.jobs, 1)),
                         COUNTERFEIT_JOBS_MAX_BYTES=str(1 << 45)) as server:
        submitted = Counter(httpx.post(f"{server.url}/jobs/submit", json={"n": args.n},
                                       timeout=60).status_code for _ in range(args.jobs))

        def sample(i: int) -> tuple[int | str, float]:
            started = time.perf_counter()
            try:
                code: int | str = httpx.post(f"{server.url}/sample", json={"n": 16, "seed": i},
                                             timeout=args.timeout).status_code
            except httpx.TimeoutException:
                code = "timeout"
            return code, time.perf_counter() - started

        with ThreadPoolExecutor(args.clients) as pool:
            answers = list(pool.map(sample, range(args.requests)))
    seconds = np.array([s for _, s in answers])
    codes = Counter(code for code, _ in answers)
    print(f"{args.jobs} jobs of n={args.n} submitted ({dict(submitted)}); "
          f"{args.requests} x /sample n=16 from {args.clients} clients: "
          f"p50 {np.percentile(seconds, 50):.3f} s, p99 {np.percentile(seconds, 99):.3f} s, "
          f"max {seconds.max():.3f} s; status {dict(codes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
