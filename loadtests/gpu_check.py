"""`make gpu-check`: on a machine with an NVIDIA GPU, check that Counterfeit really serves
on CUDA, and record what the GPU gives into docs/benchmarks.md (its "GPU" section, with the
device named). Run it in an environment with onnxruntime-gpu and not onnxruntime (the
Makefile target makes one: .venv-gpu).

Checks (each failure is one line and exit status 1):
1. onnxruntime offers CUDAExecutionProvider, and a session of the shipped generator runs
   on it (onnxruntime falls back to the CPU silently when it cannot);
2. G's images on CUDA equal the CPU provider's within GPU_TOLERANCE (cuBLAS may sum in
   another order, or in TF32);
3. a served `bentoml serve` with COUNTERFEIT_DEVICE=cuda reports the CUDA provider in
   /metrics (counterfeit_model_info) and answers a seed with the CPU provider's images.

Figures: in-process samples/s at n = 1 ... 16,384 (the CPU provider on every core, CUDA
with session.run as the service calls it, and CUDA with onnxruntime's I/O binding, which
the service does not use while this column stays below session.run's) and served
samples/s (one client per size, n up to the 1,024 a request allows, and a 16,384-image
job).

Without an NVIDIA GPU it says so and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests.rates import rate  # noqa: E402
from loadtests.server import MODELS, REPO, serving  # noqa: E402
from loadtests.serving_bench import reference_images  # noqa: E402
from service.runtime import Model, gpu_present, load_model  # noqa: E402

MODEL = MODELS / "mnist-mlp"
GPU_TOLERANCE = 1e-3  # absolute, on pixels in [0, 1]
SIZES = (1, 16, 256, 1024, 4096, 16_384)
SERVED_SIZES = (1, 64, 256, 1024)
JOB_IMAGES = 16_384
START, END = "<!-- gpu: written by make gpu-check -->", "<!-- /gpu -->"
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def device_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                           "--format=csv,noheader"], capture_output=True, text=True)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 else "an NVIDIA GPU"


def fail(message: str) -> None:
    print(f"gpu-check: FAILED: {message}")
    sys.exit(1)


def generate_bound(model: Model, z: np.ndarray) -> np.ndarray:
    """G's images through onnxruntime's I/O binding: latents bound from the host, images
    allocated on the GPU and copied back in one piece; clipped as Model.generate clips."""
    session = model.sessions["generator"]
    binding = session.io_binding()
    binding.bind_cpu_input("z", z)
    binding.bind_output(session.get_outputs()[0].name, "cuda")
    session.run_with_iobinding(binding)
    x = binding.copy_outputs_to_cpu()[0]
    return np.clip(x, 0.0, 1.0, out=x)


def check_in_process() -> tuple[list[str], float]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        fail(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
             f"{ort.get_available_providers()}): install onnxruntime-gpu, not onnxruntime")
    cpu = load_model(MODEL, ["CPUExecutionProvider"], threads=0)
    gpu = load_model(MODEL, CUDA, threads=1, require_cuda=True)
    if gpu.provider != "CUDAExecutionProvider":
        fail(f"the generator's session runs on {gpu.provider}, not CUDA")
    z = cpu.latents(1024, seed=7)
    error = float(np.abs(gpu.generate(z) - cpu.generate(z)).max())
    if error > GPU_TOLERANCE:
        fail(f"CUDA images differ from the CPU provider's by {error:.2e} > {GPU_TOLERANCE}")
    if not np.array_equal(generate_bound(gpu, z).reshape(len(z), -1),
                          gpu.generate(z).reshape(len(z), -1)):
        fail("images through I/O binding differ from session.run's")
    lines = ["| n | CPU provider samples/s | CUDA, session.run (served) | "
             "CUDA, I/O binding (not used) | CUDA / CPU |", "| --- | --- | --- | --- | --- |"]
    for n in SIZES:
        zn = cpu.latents(n, seed=n)
        r_cpu = rate(lambda zn=zn: cpu.generate(zn), n)
        r_run = rate(lambda zn=zn: gpu.generate(zn), n)
        r_bind = rate(lambda zn=zn: generate_bound(gpu, zn), n)
        lines.append(f"| {n:,} | {r_cpu:,.0f} | {r_run:,.0f} | {r_bind:,.0f} | "
                     f"{r_run / r_cpu:.1f}× |")
    return lines, error


def check_served() -> list[str]:
    with tempfile.TemporaryDirectory() as state, \
            serving(MODELS, Path(state), workers=1, COUNTERFEIT_DEVICE="cuda") as server:
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        if not re.search(r'counterfeit_model_info\{[^}]*provider="CUDAExecutionProvider"',
                         metrics):
            fail("the served models do not report the CUDA provider in /metrics")
        want = reference_images(8, 3)
        got = np.load(io.BytesIO(httpx.post(f"{server.url}/sample", json={
            "n": 8, "seed": 3, "format": "npy"}, timeout=30).content)).reshape(want.shape)
        if np.abs(got - want).max() > GPU_TOLERANCE:
            fail("the served images for seed 3 are not the CPU provider's")
        lines = ["| request | served samples/s (one client) |", "| --- | --- |"]
        with httpx.Client(timeout=60) as client:
            for n in SERVED_SIZES:
                body = {"n": n, "format": "npy"}
                per_s = rate(lambda body=body: client.post(f"{server.url}/sample", json=body)
                             .raise_for_status(), n, 3.0)
                lines.append(f"| n = {n:,} npy | {per_s:,.0f} |")
            started = time.perf_counter()
            job = client.post(f"{server.url}/jobs/submit", json={"n": JOB_IMAGES}).json()
            while client.post(f"{server.url}/jobs/status", json={"job_id": job["job_id"]}
                              ).json()["state"] in ("queued", "running"):
                time.sleep(0.05)
            lines.append(f"| job of {JOB_IMAGES:,} | "
                         f"{JOB_IMAGES / (time.perf_counter() - started):,.0f} |")
    return lines


def write_section(text: str, out: Path) -> None:
    """Replace the GPU section of `out` (between START and END), or add it before the
    hand-written analysis."""
    doc = out.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in doc:
        doc = doc[:doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        marker = "<!-- analysis:"
        at = doc.index(marker) if marker in doc else len(doc)
        doc = doc[:at] + block + "\n\n" + doc[at:]
    out.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    if not gpu_present():
        print("gpu-check: no NVIDIA GPU on this machine (no /dev/nvidia0): nothing checked")
        return 2
    import onnxruntime as ort

    device = device_name()
    inprocess, error = check_in_process()
    served = check_served()
    text = "\n".join([
        "## GPU", "",
        f"Device: {device}; onnxruntime {ort.__version__}. Generated by `make gpu-check` "
        f"({time.strftime('%Y-%m-%d')}). CUDA images equal the CPU provider's within "
        f"{error:.1e} (tolerance {GPU_TOLERANCE}); the served models report "
        "CUDAExecutionProvider.", "", "In-process, the shipped generator:", "", *inprocess,
        "", "Served (`bentoml serve`, one worker, COUNTERFEIT_DEVICE=cuda):", "", *served, ""])
    write_section(text, Path(args.out))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
