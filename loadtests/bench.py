"""`make bench`: every figure of docs/benchmarks.md, each a ratio against a baseline
measured in the same run on the same machine, and the serving goals computed from them.
Writes docs/benchmarks.md (its hand-written analysis at the end is kept).

Sections: 1 G in-process, onnxruntime vs torch eager (and the machine's fp32 GEMM
ceiling); 2 Counterfeit against the floor, FastAPI + torch and LitServe under wrk
(loadtests/serving_bench.py), with scoring and jobs; 3 our trainer vs a minimal loop;
4 Parzen. About 15 minutes; run it on a quiet machine.

    .venv/bin/python loadtests/bench.py [--seconds 5] [--repetitions 3] [--loads n1-32,...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from loadtests.baselines.fastapi_torch import generator_from_onnx  # noqa: E402
from loadtests.gpu_check import START as GPU_SECTION  # noqa: E402
from loadtests.rates import rate  # noqa: E402
from loadtests.server import MODELS  # noqa: E402
from loadtests.serving_bench import (  # noqa: E402
    IMAGES_PER_REQUEST,
    JOB_IMAGES,
    LOADS,
    Row,
    cores,
    measure,
)
from loadtests.wrk import WrkResult  # noqa: E402
from service.contract.card import read_card  # noqa: E402
from service.runtime import make_session  # noqa: E402

MODEL = MODELS / "mnist-mlp"
CARD = read_card(MODEL)
# multiply-adds of G's layers (latent -> hidden -> ... -> pixels), from the card
_G_SIZES = [CARD.latent.dim, *CARD.raw["training"]["config"]["g_hidden"], CARD.image.pixels]
G_FLOPS_PER_SAMPLE = 2 * sum(a * b for a, b in itertools.pairwise(_G_SIZES))
ALL_CORES = os.sched_getaffinity(0)
# docs/benchmarks.md from this line on is written by hand and kept by `make bench`
ANALYSIS = "<!-- analysis: written by hand, kept by make bench -->"


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


def inprocess_one_thread(core: int | None) -> dict[str, float]:
    """In-process rates on the server's core with one onnxruntime thread, as every served
    contender runs: G samples/s at batch 256 and 1024, D images/s at batch 64."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        g = make_session(MODEL / "generator.onnx", ["CPUExecutionProvider"], 1)
        d = make_session(MODEL / "discriminator.onnx", ["CPUExecutionProvider"], 1)
        x = np.random.default_rng(0).random((64, *CARD.image.shape), np.float32)
        return {"g256": rate(lambda: g.run(None, {"z": CARD.latent.sample(256, 0)}), 256),
                "g1024": rate(lambda: g.run(None, {"z": CARD.latent.sample(1024, 0)}), 1024),
                "d64": rate(lambda: d.run(None, {"x": x}), 64)}
    finally:
        os.sched_setaffinity(0, ALL_CORES)


# the table's column of each load: requests/s, or images/s where a request is many images
def _per_s(load: str, result: WrkResult) -> float:
    return result.requests_per_s * IMAGES_PER_REQUEST.get(load, 1)


def serving_tables(rows: dict[str, Row], names: list[str], reference: dict[str, float]
                   ) -> list[str]:
    lines = []
    for load, row in rows.items():
        if load == "jobs":
            continue
        title = LOADS[load].name if load in LOADS else "/score, 64 uint8 images, 8 connections"
        unit = "requests/s" if IMAGES_PER_REQUEST.get(load, 1) == 1 else "images/s"
        floor = max((row.median(f, lambda r, load=load: _per_s(load, r))
                     for f in ("floor", "floor (batched)") if f in row.runs), default=None)
        lines += [f"**{title}**", "", f"| server | {unit} | spread | p50 ms | p99 ms | "
                  "vs best floor | images right |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for who in (n for n in names if n in row.runs):
            per_s = row.median(who, lambda r, load=load: _per_s(load, r))
            low, high = row.spread(who, lambda r, load=load: _per_s(load, r))
            versus = f"{per_s / floor:.2f}" if floor else "—"
            lines.append(f"| {who} | {per_s:,.0f} | {low:,.0f}–{high:,.0f} | "
                         f"{row.median(who, lambda r: r.p50_ms):.2f} | "
                         f"{row.median(who, lambda r: r.p99_ms):.1f} | {versus} | "
                         f"{row.wrong.get(who, 'yes')} |")
        if load == "score":
            served = row.median("counterfeit", lambda r: _per_s("score", r))
            lines.append(f"\nIn-process D, batch 64, one thread: {reference['d64']:,.0f} images/s "
                         f"(served / in-process {served / reference['d64']:.2f}).")
        lines.append("")
    if "jobs" in rows:
        row = rows["jobs"]
        seconds = row.median("counterfeit", lambda r: r.seconds)
        per_s = JOB_IMAGES / seconds
        lines += ["**Jobs**: one job of "
                  f"{JOB_IMAGES:,} images, submit to completed (status polled every 50 ms): "
                  f"{seconds:.2f} s, {per_s:,.0f} images/s; in-process G at batch 1024, one "
                  f"thread: {reference['g1024']:,.0f} samples/s (job / in-process "
                  f"{per_s / reference['g1024']:.2f}); result right: "
                  f"{row.wrong.get('counterfeit', 'yes')}.", ""]
    return lines


def goals(rows: dict[str, Row], reference: dict[str, float]) -> list[str]:
    """The serving goals against this run's figures (medians of the repetitions)."""
    def rps(load: str, who: str) -> float:
        return rows[load].median(who, lambda r: _per_s(load, r))

    def p(load: str, who: str, which: str) -> float:
        return rows[load].median(who, lambda r: getattr(r, which))

    ours = "counterfeit"
    litserve = max(("litserve", "litserve (batched)"), key=lambda w: rps("n1-32", w))
    best_floor = {load: max(("floor", "floor (batched)"), key=lambda w, load=load: rps(load, w))
                  for load in ("npy64", "png16")}
    checks = [
        ("n = 1, 32 connections: ≥ 1.1× the (unbatched) floor",
         rps("n1-32", ours) / rps("n1-32", "floor"), 1.1),
        ("n = 1, 32 connections: ≥ 1.5× FastAPI + torch",
         rps("n1-32", ours) / rps("n1-32", "fastapi + torch"), 1.5),
        (f"n = 1, 32 connections: ≥ 2× LitServe (its better: {litserve})",
         rps("n1-32", ours) / rps("n1-32", litserve), 2.0),
        ("n = 1, 32 connections: p99 ≤ 50 ms", 50 / p("n1-32", ours, "p99_ms"), 1.0),
        ("n = 1, one client: p50 latency ≤ 1.5× the floor's",
         1.5 * p("n1-1", "floor", "p50_ms") / p("n1-1", ours, "p50_ms"), 1.0),
        (f"n = 64 npy: ≥ 0.9 of the floor ({best_floor['npy64']})",
         rps("npy64", ours) / rps("npy64", best_floor["npy64"]), 0.9),
        (f"n = 16 PNG: ≥ 0.9 of the floor ({best_floor['png16']})",
         rps("png16", ours) / rps("png16", best_floor["png16"]), 0.9),
        ("n = 256 npy: ≥ 0.95 of in-process onnxruntime, one thread",
         rps("npy256", ours) / reference["g256"], 0.95),
    ]
    figures = {
        "n = 1, 32 connections: p99 ≤ 50 ms": f"{p('n1-32', ours, 'p99_ms'):.1f} ms",
        "n = 1, one client: p50 latency ≤ 1.5× the floor's":
            f"{p('n1-1', ours, 'p50_ms'):.2f} ms vs {p('n1-1', 'floor', 'p50_ms'):.2f} ms "
            f"({p('n1-1', ours, 'p50_ms') / p('n1-1', 'floor', 'p50_ms'):.2f}×)",
    }
    wrong = sorted({f"{who} ({load}): {what}" for load, row in rows.items()
                    for who, what in row.wrong.items()})
    lines = ["| goal | this run | met |", "| --- | --- | --- |",
             *(f"| {goal} | {figures.get(goal, f'{value:.2f}×')} | "
               f"{'yes' if value >= target else '**no**'} |" for goal, value, target in checks),
             f"| every server's images right, every run | "
             f"{'; '.join(wrong) if wrong else 'all right'} | {'**no**' if wrong else 'yes'} |"]
    return lines


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
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk measurement")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--loads", default=",".join([*LOADS, "score", "jobs"]),
                        help="comma-separated: " + ", ".join([*LOADS, "score", "jobs"]))
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    loads = args.loads.split(",")
    server_core, load_core = cores()
    started = time.monotonic()
    sections = []
    rows1, _ = row1_inprocess(threads=len(ALL_CORES))
    sections.append((f"1. Generator in-process ({len(ALL_CORES)} threads)", rows1))
    # measured in every repetition, as the servers are: once, it was at the mercy of the
    # machine's drift (a run whose one figure came 20% low put n = 256 at 1.13× it)
    references: list[dict[str, float]] = []
    rows, chosen = measure(loads, args.repetitions, args.seconds, server_core, load_core,
                           progress=lambda line: print(line, flush=True),
                           each_repetition=lambda: references.append(
                               inprocess_one_thread(server_core)))
    reference = {key: statistics.median(r[key] for r in references) for key in references[0]}
    g256 = sorted(r["g256"] for r in references)
    names = [c.name for c in chosen]
    sections.append(("2. Serving: Counterfeit and its peers under wrk", [
        f"Each server pinned to core {server_core} with one onnxruntime thread, wrk (one "
        f"thread) pinned to core {load_core}; {args.repetitions} alternating repetitions of "
        f"{args.seconds:g} s after 1 s of warm-up; medians, and the spread over the "
        "repetitions. \"images right\": after every run the server's npy (and PNG) answer "
        "for a fixed seed was compared with onnxruntime in this process. In-process on the "
        "server's core, one onnxruntime thread, measured at the start of each repetition "
        f"(medians): G {reference['g256']:,.0f} samples/s at batch 256 (spread "
        f"{g256[0]:,.0f}–{g256[-1]:,.0f}) and {reference['g1024']:,.0f} at 1024 (two "
        "threads: section 1).",
        "", *serving_tables(rows, names, reference)]))
    if {"n1-32", "n1-1", "npy64", "png16", "npy256"} <= set(loads):
        sections.insert(0, ("Goals, from this run", goals(rows, reference)))
    sections.append(("3. Training iteration", row5_training(steps=200)))
    sections.append(("4. Evaluation", row6_parzen()))
    text = ["# Benchmarks", "", f"Machine: {machine()}. Generated by `make bench` "
            f"({time.strftime('%Y-%m-%d')}, {(time.monotonic() - started) / 60:.0f} min).", ""]
    for title, lines in sections:
        text += [f"## {title}", "", *lines, ""]
    out = Path(args.out)
    previous = out.read_text() if out.is_file() else ""
    for kept in (GPU_SECTION, ANALYSIS):  # make gpu-check's section and the hand-written
        if kept in previous:              # analysis stay
            text.append(previous[previous.index(kept):])
            break
    out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
