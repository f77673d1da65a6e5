"""Against a real `bentoml serve` process: a model exported by training is served and
batching under concurrency keeps the seed contract, /metrics counts, a job survives a
restart, a broken model or setting stops start-up in one line."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.server import REPO, free_port, serve_command, serve_env, serving
from service.runtime import gpu_present, load_models
from tests.jobs import wait_for_job


def test_concurrent_seeded_requests_metrics_and_a_job_across_a_restart(
        tiny_models_dir: Path, tmp_path: Path) -> None:
    model = load_models(tiny_models_dir, device="cpu")["tiny"]
    requests = [(1 + i % 5, 100 + i) for i in range(40)]  # (n, seed)
    with serving(tiny_models_dir, tmp_path) as server:
        url = server.url
        def ask(job: tuple[int, int]) -> np.ndarray:
            n, seed = job
            r = httpx.post(f"{url}/sample", json={"n": n, "seed": seed, "format": "npy"},
                           timeout=30)
            assert r.status_code == 200, r.text
            return np.load(io.BytesIO(r.content))

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, requests))
        for (n, seed), images in zip(requests, answers, strict=True):
            np.testing.assert_allclose(images, model.generate(model.latents(n, seed)),
                                       atol=1e-5)
        metrics = httpx.get(f"{url}/metrics").text
        generated = [line for line in metrics.splitlines()
                     if line.startswith('counterfeit_images_generated_total{endpoint="sample"')]
        assert float(generated[0].split()[-1]) == sum(n for n, _ in requests)
        batches = [line for line in metrics.splitlines()
                   if line.startswith('counterfeit_inference_batch_rows_count{model="tiny",'
                                      'network="generator"}')]
        assert 0 < float(batches[0].split()[-1]) <= len(requests)

        with httpx.Client(base_url=url, timeout=30) as client:
            job = client.post("/jobs/submit", json={"n": 2000, "seed": 4}).json()
            assert wait_for_job(client, job["job_id"])["state"] == "completed"
            result = client.post("/jobs/result", json={"job_id": job["job_id"]})
        assert result.status_code == 200
    with serving(tiny_models_dir, tmp_path) as server:  # a restart: the result is kept
        again = httpx.post(f"{server.url}/jobs/result", json={"job_id": job["job_id"]})
        assert again.status_code == 200 and again.content == result.content
        assert np.load(io.BytesIO(again.content))["images"].shape == (2000, 28, 28)


def test_metrics_are_summed_over_two_workers(served_models: Path, tmp_path: Path) -> None:
    with serving(served_models, tmp_path, workers=2, COUNTERFEIT_DEFAULT_MODEL="tiny") as server:
        url = server.url
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: httpx.post(
                f"{url}/sample", json={"n": 3, "format": "npy"}, timeout=30).status_code,
                range(40)))
        assert codes == [200] * 40
        metrics = httpx.get(f"{url}/metrics").text
    line = next(line for line in metrics.splitlines()
                if line.startswith('counterfeit_images_generated_total{endpoint="sample"'))
    assert float(line.split()[-1]) == 120.0
    info = [line for line in metrics.splitlines() if line.startswith("counterfeit_model_info")]
    assert len(info) == len(list(served_models.iterdir()))
    assert all(line.endswith(" 1.0") for line in info)


def _start_up_output(models: Path, state: Path, **settings: str) -> str:
    """What a server that must refuse to start prints; it must also exit non-zero."""
    proc = subprocess.run(serve_command(free_port()), cwd=REPO,
                          env=serve_env(models, state, **settings), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_a_broken_model_stops_start_up_in_one_line_naming_the_file(served_models: Path,
                                                                   tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(served_models, models)
    (models / "rgb" / "discriminator.onnx").write_bytes(b"truncated")
    output = _start_up_output(models, tmp_path)
    assert "rgb/discriminator.onnx: sha256" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("setting", "message"), [
    ({"COUNTERFEIT_DEVICE": "cuda"}, "COUNTERFEIT_DEVICE=cuda but no usable GPU"),
    ({"COUNTERFEIT_DEFAULT_MODEL": "nope"}, "COUNTERFEIT_DEFAULT_MODEL='nope' is not among"),
    ({"COUNTERFEIT_WORKERS": "many"}, "COUNTERFEIT_WORKERS='many'"),
])
def test_bad_settings_stop_start_up_in_one_line(served_models: Path, tmp_path: Path,
                                                setting: dict, message: str) -> None:
    if "COUNTERFEIT_DEVICE" in setting and gpu_present():
        pytest.skip("a GPU is present: cuda is a valid setting here")
    output = _start_up_output(served_models, tmp_path, **setting)
    assert message in output and "Traceback" not in output


def test_bentoml_build_packages_the_service_and_the_shipped_models(tmp_path: Path) -> None:
    shipped = sorted(p.parent.name for p in (REPO / "models").glob("*/generator.onnx"))
    if not shipped:
        pytest.skip("no model shipped under models/ yet")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "True"}
    proc = subprocess.run([sys.executable, "-m", "bentoml", "build"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = {p.relative_to(p.parents[3]).as_posix()
             for p in (tmp_path / "bentos").rglob("src/models/*/*.onnx")}
    for name in shipped:
        assert f"src/models/{name}/generator.onnx" in built
        assert f"src/models/{name}/discriminator.onnx" in built
    sources = {p.relative_to(p.parents[2]).as_posix()
               for p in (tmp_path / "bentos").rglob("src/service/*/*.py")}
    assert {"service/contract/card.py", "service/asgi/http_guard.py"} <= sources


def test_schemathesis_finds_no_server_error_and_no_schema_lie(served_models: Path,
                                                             tmp_path: Path) -> None:
    """A bounded property-based run against the service's own /docs.json (fixed seed)."""
    with serving(served_models, tmp_path, COUNTERFEIT_DEFAULT_MODEL="tiny") as server:
        url = server.url
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/docs.json",
             "--checks", "not_a_server_error,response_schema_conformance,"
             "content_type_conformance,status_code_conformance",
             "--max-examples", "15", "--seed", "1",
             "--exclude-path-regex", "^/(metrics|livez|readyz|healthz)"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        log = server.log.read_text()
    assert proc.returncode == 0, proc.stdout[-4000:]
    # hundreds of refused requests, and not one traceback in the server's log
    assert "answered 4xx" in log and "Traceback" not in log
    counts = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert counts and int(counts.group(1)) > 100 and counts.group(1) == counts.group(2)
    print(f"schemathesis: {counts.group(0)}")  # the count docs/reliability.md reports
