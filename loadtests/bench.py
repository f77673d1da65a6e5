"""`make bench`: every figure of docs/benchmarks.md, each a ratio against a baseline
measured in the same run on the same machine. Writes docs/benchmarks.md.

Rows: 1 G in-process, onnxruntime vs torch eager (and the machine's fp32 GEMM ceiling);
2 served vs in-process; 3 n=1 at 32 users, batching on vs off; 4 the peer (FastAPI +
torch eager) under the same locust profile; 5 our trainer vs a minimal loop; 6 Parzen.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from loadtests.baselines.fastapi_torch import generator_from_onnx  # noqa: E402
from loadtests.batching import hammer  # noqa: E402
from loadtests.server import MODELS, free_port, running, serving_shipped  # noqa: E402
from service.contract.card import read_card  # noqa: E402
from service.runtime import make_session  # noqa: E402

MODEL = MODELS / "mnist-mlp"
CARD = read_card(MODEL)
# multiply-adds of G's layers (latent -> hidden -> ... -> pixels), from the card
_G_SIZES = [CARD.latent.dim, *CARD.raw["training"]["config"]["g_hidden"], CARD.image.pixels]
G_FLOPS_PER_SAMPLE = 2 * sum(a * b for a, b in itertools.pairwise(_G_SIZES))
# docs/benchmarks.md from this line on is written by hand and kept by `make bench`
ANALYSIS = "<!-- analysis: written by hand, kept by make bench -->"


def rate(fn: Callable[[], object], rows: int, seconds: float = 1.0) -> float:
    """Rows per second of fn, from the median of repeated calls over about `seconds`."""
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return rows / statistics.median(times)


GEMM_SHAPES = ((1024, 1200, 1200), (2048, 2048, 2048), (4096, 1024, 1024))


def _ort_matmul(k: int, n: int, threads: int) -> Callable[[np.ndarray], object]:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["m", n])],
        [helper.make_tensor("b", TensorProto.FLOAT, (k, n),
                            np.random.default_rng(0).random((k, n), np.float32).ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = make_session(model.SerializeToString(), ["CPUExecutionProvider"], threads)
    return lambda a: session.run(None, {"a": a})


def gemm_gflops(threads: int) -> tuple[float, str]:
    """The machine's fp32 matrix-multiply rate, as the best that torch, numpy and
    onnxruntime's own MatMul reach over a few shapes (G's widest layer at batch 1024 among
    them): GFLOP/s and which library and shape reached it."""
    best = (0.0, "")
    for m, k, n in GEMM_SHAPES:
        a = np.random.default_rng(1).random((m, k), np.float32)
        b = np.random.default_rng(2).random((k, n), np.float32)
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        matmul = _ort_matmul(k, n, threads)
        for library, fn in (("torch", lambda at=at, bt=bt: at @ bt),
                            ("numpy", lambda a=a, b=b: a @ b),
                            ("onnxruntime", lambda a=a, matmul=matmul: matmul(a))):
            gflops = rate(fn, 2 * m * k * n, 1.0) / 1e9
            best = max(best, (gflops, f"{library} {m}×{k} @ {k}×{n}"))
    return best


def row1_inprocess(threads: int) -> tuple[list[str], dict[int, float]]:
    # the session as the service runs it
    session = make_session(MODEL / "generator.onnx", ["CPUExecutionProvider"], threads)
    torch.set_num_threads(threads)
    g = generator_from_onnx(MODEL / "generator.onnx")
    gflops, reached_by = gemm_gflops(threads)
    ceiling = gflops * 1e9 / G_FLOPS_PER_SAMPLE
    lines = ["| batch | onnxruntime samples/s | torch eager samples/s | ort / torch | "
             "ort / GEMM ceiling |", "| --- | --- | --- | --- | --- |"]
    ort_rates = {}
    latent = CARD.latent
    for batch in (1, 16, 64, 256, 1024):
        z = latent.sample(batch, seed=0)
        zt = torch.from_numpy(z)
        r_ort = rate(lambda z=z: session.run(None, {"z": z}), batch)
        with torch.no_grad():
            r_torch = rate(lambda zt=zt: g(zt), batch)
        ort_rates[batch] = r_ort
        if batch != 64:
            lines.append(f"| {batch} | {r_ort:,.0f} | {r_torch:,.0f} | {r_ort / r_torch:.2f} | "
                         f"{r_ort / ceiling:.2f} |")
    lines.append(f"\nGEMM ceiling: the best fp32 matmul rate measured here, {gflops:.0f} GFLOP/s "
                 f"({reached_by}, {threads} threads) = {ceiling:,.0f} samples/s for G's "
                 f"{G_FLOPS_PER_SAMPLE / 1e6:.1f} MFLOP per sample.")
    return lines, ort_rates


def served_rate(url: str, n: int, clients: int, seconds: float) -> float:
    done = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop:
                r = c.post(f"{url}/sample", json={"n": n, "format": "npy"})
                r.raise_for_status()
                with lock:
                    done[0] += n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - started)


def row2_served(ort_rates: dict[int, float], seconds: float
                ) -> tuple[list[str], dict[tuple[int, int], float]]:
    lines = ["| request | clients | served samples/s | in-process samples/s | "
             "served / in-process |", "| --- | --- | --- | --- | --- |"]
    ratios = {}
    with serving_shipped() as server:
        for n in (64, 256):
            for clients in (1, 4):
                served_rate(server.url, n, clients, 1.0)  # warm-up
                served = served_rate(server.url, n, clients, seconds)
                ratios[(n, clients)] = served / ort_rates[n]
                lines.append(f"| n={n} npy | {clients} | {served:,.0f} | {ort_rates[n]:,.0f} | "
                             f"{served / ort_rates[n]:.2f} |")
    return lines, ratios


def row3_batching(seconds: float) -> tuple[list[str], dict[str, dict]]:
    lines = ["| batching | requests/s | p50 ms | p99 ms | errors (503s included) |",
             "| --- | --- | --- | --- | --- |"]
    figures = {}
    for label, env in (("off", {"COUNTERFEIT_BATCHING": "off"}),
                       ("on (2 ms, 256 rows)", {"COUNTERFEIT_BATCHING": "on"})):
        with serving_shipped(**env) as server:
            hammer(server.url, 32, 2)
            wall, lat, errors = hammer(server.url, 32, seconds)
        figures[label] = {"rps": len(lat) / wall, "p99_ms": lat[int(0.99 * len(lat))] * 1e3,
                          "errors": errors}
        lines.append(f"| {label} | {len(lat) / wall:.0f} | {lat[len(lat) // 2] * 1e3:.1f} | "
                     f"{figures[label]['p99_ms']:.1f} | {errors} |")
    return lines, figures


def _locust(profile: str, host: str, users: int, duration: str, out: Path) -> dict:
    subprocess.run([sys.executable, str(HERE / "run.py"), "--profile", profile, "--host", host,
                    "--users", str(users), "--duration", duration, "--out", str(out)],
                   cwd=REPO, capture_output=True, text=True)
    stats = {row.split(",")[1]: row.split(",") for row in
             (out / "locust_stats.csv").read_text().splitlines()[1:]}
    header = (out / "locust_stats.csv").read_text().splitlines()[0].split(",")
    agg = dict(zip(header, stats["Aggregated"], strict=True))
    return {"rps": float(agg["Requests/s"]), "p99": float(agg["99%"]),
            "failures": int(agg["Failure Count"])}


def row4_peer(duration: str, users: int) -> tuple[list[str], dict[str, float]]:
    lines = ["| profile | server | samples/s | p99 ms | failures |",
             "| --- | --- | --- | --- | --- |"]
    results, ratios = {}, {}
    out = Path(tempfile.mkdtemp())
    for profile, n in (("npy64", 64), ("single", 1)):
        with serving_shipped() as server:
            results[(profile, "counterfeit")] = _locust(profile, server.url, users, duration,
                                                        out / f"c-{profile}")
        port = free_port()
        peer = f"http://127.0.0.1:{port}"
        with running([sys.executable, "-m", "uvicorn", "loadtests.baselines.fastapi_torch:app",
                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                     peer, out / f"peer-{profile}.log"):
            results[(profile, "peer")] = _locust(profile, peer, users, duration,
                                                 out / f"p-{profile}")
        for who in ("counterfeit", "peer"):
            r = results[(profile, who)]
            lines.append(f"| {profile} ({users} users) | {who} | {r['rps'] * n:,.0f} | "
                         f"{r['p99']:.0f} | {r['failures']} |")
        ours, theirs = results[(profile, "counterfeit")], results[(profile, "peer")]
        ratios[profile] = ours["rps"] / theirs["rps"]
        lines.append(f"| {profile} | **ratio** | **{ratios[profile]:.2f}×** | "
                     f"{ours['p99'] / max(theirs['p99'], 1e-9):.2f}× | |")
    if (MODELS / "mnist-conditional").is_dir():  # §7.1: labelled samples; the peer has none
        with serving_shipped() as server:
            r = _locust("labelled", server.url, users, duration, out / "c-labelled")
        lines.append(f"| labelled n=16 ({users} users) | counterfeit | {r['rps'] * 16:,.0f} | "
                     f"{r['p99']:.0f} | {r['failures']} |")
    return lines, ratios


def goals(served: dict[tuple[int, int], float], batching: dict[str, dict],
          peer: dict[str, float]) -> list[str]:
    """The serving goals against this run's figures."""
    on, off = batching["on (2 ms, 256 rows)"], batching["off"]
    best_served = max(r for (n, _), r in served.items() if n == 256)
    rows = [
        ("served n=256 npy ≥ 50% of in-process onnxruntime at batch 256",
         f"{best_served:.0%} (best of 1 and 4 clients)", best_served >= 0.5),
        ("batching on at least as fast as off, n=1, 32 users",
         f"{on['rps']:.0f} vs {off['rps']:.0f} requests/s ({on['rps'] / off['rps']:.2f}×)",
         on["rps"] >= off["rps"]),
        ("p99 under 100 ms with batching, n=1, 32 users", f"{on['p99_ms']:.0f} ms",
         on["p99_ms"] < 100),
        ("≥ 1.5× the peer's samples/s", ", ".join(f"{k} {v:.2f}×" for k, v in peer.items()),
         all(v >= 1.5 for v in peer.values())),
    ]
    return ["| goal | this run | met |", "| --- | --- | --- |",
            *(f"| {goal} | {figure} | {'yes' if met else '**no**'} |"
              for goal, figure, met in rows)]


def row5_training(steps: int) -> list[str]:
    from training.config import preset, with_overrides
    from training.data.mnist import load_mnist
    from training.gan.networks import build_networks, sample_noise
    from training.gan.train import train
    from training.runs import training_metrics

    torch.set_num_threads(2)
    data = load_mnist().train.images
    config = with_overrides(preset("mnist-paper"), {"log_every": steps // 2, "threads": 2})
    with tempfile.TemporaryDirectory() as run:
        train(config, run, data=data, max_steps=steps, progress=False)
        records = training_metrics(Path(run))
        ours = (records[-1]["seconds"] - records[0]["seconds"]) / (steps // 2)

    x_all = torch.from_numpy(data)
    bce = torch.nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(100, 1), torch.zeros(100, 1)

    def minimal_loop(compiled: bool) -> tuple[float, float]:
        """(seconds for the first steps // 2 steps, compilation included; seconds per step
        over the next steps // 2)."""
        g, d = build_networks(config)
        opt_g = torch.optim.SGD(g.parameters(), lr=0.1, momentum=0.5)
        opt_d = torch.optim.SGD(d.parameters(), lr=0.1, momentum=0.5)
        if compiled:
            g, d = torch.compile(g), torch.compile(d)

        def step(i: int) -> None:
            x = x_all[(i * 100) % 50_000:(i * 100) % 50_000 + 100]
            fake = g(sample_noise(100, config)).detach()
            loss_d = bce(d(x), ones) + bce(d(fake), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(g(sample_noise(100, config))), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()

        t = time.perf_counter()
        for i in range(steps // 2):
            step(i)
        first = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(steps // 2):
            step(i)
        return first, (time.perf_counter() - t) / (steps // 2)

    _, minimal = minimal_loop(compiled=False)
    compile_first, compiled = minimal_loop(compiled=True)
    return ["| loop | ms / iteration | vs minimal loop |", "| --- | --- | --- |",
            f"| minimal hand-written loop (same nets, torch SGD) | {minimal * 1e3:.1f} | 1.00 |",
            f"| Counterfeit trainer (`mnist-paper`) | {ours * 1e3:.1f} | "
            f"{ours / minimal:.2f} |",
            f"| minimal loop, G and D under `torch.compile` | {compiled * 1e3:.1f} | "
            f"{compiled / minimal:.2f} |",
            f"\n`torch.compile`: its first {steps // 2} steps took {compile_first:.0f} s "
            "(compilation included)."]


def row6_parzen() -> list[str]:
    from training.data.mnist import load_mnist
    from training.evaluation.parzen import parzen_protocol

    m = load_mnist()
    t = time.perf_counter()
    result = parzen_protocol(m.train.images[:10_000], m.valid.images[:1000], m.test.images)
    seconds = time.perf_counter() - t
    return ["| protocol | wall time | result |", "| --- | --- | --- |",
            f"| Parzen, 10,000 centres × (1,000 validation + 10,000 test), float64 | "
            f"{seconds:.1f} s | {result.ll:.1f} ± {result.se:.1f} (real training images) |"]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch "
            f"{torch.__version__}, onnxruntime {ort.__version__}, no GPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="per load measurement")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    sections = []
    rows1, ort_rates = row1_inprocess(threads=2)
    sections.append(("1. Generator in-process (2 threads)", rows1))
    rows2, served = row2_served(ort_rates, args.seconds)
    sections.append(("2. Served vs in-process", rows2))
    rows3, batching = row3_batching(args.seconds)
    sections.append(("3. n=1 requests at 32 concurrent clients", rows3))
    rows4, peer = row4_peer(f"{int(args.seconds * 2)}s", users=16)
    sections.append(("4. Peer: FastAPI + torch eager, same locust profile", rows4))
    sections.append(("5. Training iteration", row5_training(steps=200)))
    sections.append(("6. Evaluation", row6_parzen()))
    sections.insert(0, ("Goals, from this run", goals(served, batching, peer)))
    text = ["# Benchmarks", "", f"Machine: {machine()}. Generated by `make bench` "
            f"({time.strftime('%Y-%m-%d')}); the load generator runs on the same cores.", ""]
    for title, lines in sections:
        text += [f"## {title}", "", *lines, ""]
    out = Path(args.out)
    previous = out.read_text() if out.is_file() else ""
    if ANALYSIS in previous:  # the hand-written part stays
        text.append(previous[previous.index(ANALYSIS):])
    out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
