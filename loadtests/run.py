"""`make loadtest`: start the service, run one locust profile headless, summarise, stop.

    .venv/bin/python loadtests/run.py --profile mixed --users 20 --duration 60s

Writes locust's CSV and HTML reports and `summary.md` (requests/s, samples/s, p50/p95/p99,
failures) into --out (default loadtests/results/<profile>).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.server import REPO, serving_shipped  # noqa: E402

HERE = Path(__file__).resolve().parent
PROFILES = {
    "mixed": [],  # every user class, by weight
    "person": ["PersonAskingForAGrid"],
    "npy64": ["ProgramFetchingBatches"],
    "single": ["SingleSampleUser"],
    "interpolate": ["Interpolator"],
    "score": ["Scorer"],
    "jobs": ["BatchJobUser"],
    "labelled": ["LabelledSampleUser"],  # needs models/mnist-conditional
    "invert": ["Inverter"],  # needs models/mnist-mlp/encoder.onnx
    "inpaint": ["Inpainter"],  # needs models/mnist-inpaint
}


def locust_command(host: str, users: int, spawn_rate: float, run_time: str, csv: Path,
                   *options: str) -> list[str]:
    """locust, headless, on locustfile.py against `host`, its CSVs at `csv`_*.csv; `options`
    are more flags and the user classes to run (all of them, by weight, without any)."""
    return [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
            "--host", host, "-u", str(users), "-r", str(spawn_rate), "--run-time", run_time,
            "--csv", str(csv), "--only-summary", *options]


def summarise(stats_csv: Path) -> tuple[str, dict]:
    rows = list(csv.DictReader(stats_csv.open()))
    lines = ["| request | requests/s | samples/s | p50 ms | p95 ms | p99 ms | failures |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    total = {"requests_per_s": 0.0, "samples_per_s": 0.0, "failures": 0, "requests": 0}
    for row in rows:
        name = row["Name"]
        rps = float(row["Requests/s"])
        match = re.search(r"n=(\d+)", name)
        samples = rps * int(match.group(1)) if match and name != "Aggregated" and \
            "submit" not in name else 0.0
        if name == "Aggregated":
            total.update(requests_per_s=rps, failures=int(row["Failure Count"]),
                         requests=int(row["Request Count"]))
        else:
            total["samples_per_s"] += samples
        lines.append(f"| {name} | {rps:.1f} | {samples:.0f} | {row['50%']} | {row['95%']} | "
                     f"{row['99%']} | {row['Failure Count']} |")
    return "\n".join(lines) + "\n", total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="mixed")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--duration", default="60s", help="locust --run-time, e.g. 30s, 5m")
    parser.add_argument("--host", default=None,
                        help="test a running service at this URL instead of starting one")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or HERE / "results" / args.profile)
    out.mkdir(parents=True, exist_ok=True)
    with nullcontext() if args.host else serving_shipped() as server:
        host = args.host or server.url
        command = locust_command(host, args.users, args.spawn_rate, args.duration,
                                 out / "locust", "--html", str(out / "report.html"),
                                 *PROFILES[args.profile])
        locust = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if not (out / "locust_stats.csv").is_file():
            print(locust.stdout + locust.stderr, file=sys.stderr)
            return 1
    table, total = summarise(out / "locust_stats.csv")
    head = (f"profile {args.profile}, {args.users} users, {args.duration}: "
            f"{total['requests_per_s']:.1f} requests/s, {total['samples_per_s']:.0f} samples/s, "
            f"{total['failures']} failures of {total['requests']} requests\n\n")
    (out / "summary.md").write_text(head + table)
    print(head + table)
    print(f"reports: {out}/report.html, {out}/locust_stats.csv")
    return 0 if total["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
