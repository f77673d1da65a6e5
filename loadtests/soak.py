"""`make soak`: the mixed locust profile (jobs included: submitted, polled, fetched,
canceled, expired) at a moderate load for 10 minutes against a fresh service. Passes when
no request failed and the service's memory (RSS of the `bentoml serve` process and its
workers) grew by less than 10% from the end of warm-up to the end.

    .venv/bin/python loadtests/soak.py --users 10 --duration 600 --warmup 60

Writes soak.csv (RSS every few seconds), soak.png, locust's CSVs and summary.md into --out
(default loadtests/results/soak).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.run import HERE, locust_command, summarise  # noqa: E402
from loadtests.server import REPO, serving_shipped  # noqa: E402

MAX_GROWTH = 0.10


def service_rss(pid: int) -> float:
    """Resident memory of the server and all its workers, in MiB."""
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a worker exiting between listing and reading
            pass
    return total / 2**20


def plot(samples: list[tuple[float, float]], warmup: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([t for t, _ in samples], [m for _, m in samples])
    ax.axvline(warmup, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("seconds")
    ax.set_ylabel("service RSS (MiB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--duration", type=int, default=600, help="seconds of load")
    parser.add_argument("--warmup", type=int, default=60,
                        help="seconds of load before the reference memory reading")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between readings")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "soak")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be shorter than --duration")
    args.out.mkdir(parents=True, exist_ok=True)

    samples: list[tuple[float, float]] = []
    # finished jobs expire after 72 s, so the soak removes results as well as writing them
    with serving_shipped(COUNTERFEIT_JOB_RETENTION_HOURS="0.02") as server:
        idle = service_rss(server.pid)
        locust = subprocess.Popen(
            locust_command(server.url, args.users, 5, f"{args.duration}s", args.out / "locust"),
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while locust.poll() is None:
            samples.append((time.monotonic() - started, service_rss(server.pid)))
            print(f"\r{samples[-1][0]:5.0f} s / {args.duration} s   RSS {samples[-1][1]:7.1f} MiB",
                  end="", flush=True)
            time.sleep(args.every)
        print()

    with (args.out / "soak.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("seconds", "rss_mib"), *samples])
    plot(samples, args.warmup, args.out / "soak.png")
    warm = next(m for t, m in samples if t >= args.warmup)
    end = samples[-1][1]
    growth = end / warm - 1
    table, total = summarise(args.out / "locust_stats.csv")
    verdict = "PASS" if total["failures"] == 0 and growth < MAX_GROWTH else "FAIL"
    head = (f"soak {verdict}: mixed profile, {args.users} users, {args.duration} s: "
            f"{total['requests']} requests ({total['requests_per_s']:.1f}/s), "
            f"{total['failures']} failures\n\n"
            f"service RSS: {idle:.1f} MiB idle, {warm:.1f} MiB after {args.warmup} s warm-up, "
            f"{end:.1f} MiB at the end: growth {growth:+.1%} (limit {MAX_GROWTH:.0%})\n\n")
    (args.out / "summary.md").write_text(head + table)
    print(head + table)
    print(f"memory curve: {args.out}/soak.png, {args.out}/soak.csv")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
