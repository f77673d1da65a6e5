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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.server import (
    REPO,
    free_port,
    log_tail,
    serve_command,
    serve_env,
    serving,
    stop,
)
from service.asgi.openapi import OWN_ROUTES
from service.runtime import gpu_present, load_models
from tests.jobs import wait_for_job
from tests.model_damage import edit_card, free_card


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
        assert np.load(io.BytesIO(again.content)).shape == (2000, 28, 28)


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


START_UP_TIMEOUT = 60  # a refused start-up takes seconds: only imports and model checks


def _start_up_output(models: Path, state: Path, **settings: str) -> str:
    """What a server that must refuse to start prints. It must exit non-zero within
    START_UP_TIMEOUT s, not hang, start anyway or restart a failing worker for ever."""
    log = state / "start-up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(serve_command(free_port()), cwd=REPO,
                                env=serve_env(models, state, **settings), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        proc.wait(START_UP_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(proc)  # with any worker it started
        pytest.fail(f"the server neither stopped nor failed within {START_UP_TIMEOUT} s; "
                    f"its output ends:\n{log_tail(log)}")
    output = log.read_text(errors="replace")
    assert proc.returncode != 0, output
    return output


def _the_one_line(output: str) -> str:
    """The one line that says why the server did not start (and no traceback)."""
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]




BROKEN_MODELS = {  # what is broken: (how, what the line says)
    "truncated network": (lambda m: (m / "rgb" / "discriminator.onnx").write_bytes(b"trunc"),
                          "rgb/discriminator.onnx: sha256"),
    "latent null": (lambda m: edit_card(m / "tiny", latent=None),
                    "tiny/model.json: 'latent' must be an object"),
    "image a list": (lambda m: edit_card(m / "tiny", image=[28, 28]),
                     "tiny/model.json: 'image' must be an object"),
    "card not UTF-8": (lambda m: (m / "tiny" / "model.json").write_bytes(b'{"name": "\xff"}'),
                       "tiny/model.json: not a readable JSON model card ('utf-8' codec"),
    "bounds 1e308": (lambda m: edit_card(m / "tiny", latent={
                         "dim": 100, "distribution": "uniform", "low": -1e308, "high": 1e308}),
                     "tiny/model.json: a uniform latent needs finite numbers low < high"),
    "card a symlink loop": (lambda m: free_card(m / "tiny").symlink_to("model.json"),
                            "tiny/model.json: not a readable JSON model card (Too many levels"),
    "card a dangling symlink": (lambda m: free_card(m / "tiny").symlink_to("gone.json"),
                                "tiny/model.json: not a readable JSON model card (No such"),
    "card a FIFO": (lambda m: os.mkfifo(free_card(m / "tiny")),  # read_card blocked for ever
                    "tiny/model.json: not a readable JSON model card (not a regular file)"),
    "card a folder": (lambda m: free_card(m / "tiny").mkdir(),
                      "tiny/model.json: not a readable JSON model card (Is a directory)"),
}


@pytest.mark.parametrize("broken", BROKEN_MODELS.values(), ids=BROKEN_MODELS.keys())
def test_a_broken_model_stops_start_up_in_one_line_naming_the_file(
        served_models: Path, tmp_path: Path, broken) -> None:
    damage, message = broken
    models = tmp_path / "models"
    shutil.copytree(served_models, models)
    damage(models)
    assert message in _the_one_line(_start_up_output(models, tmp_path))


@pytest.mark.parametrize(("jobs_dir", "reason"), [("file", "not a folder"),
                                                  ("file/jobs", "Not a directory")])
def test_an_unusable_jobs_folder_stops_start_up_in_one_line(
        served_models: Path, tmp_path: Path, jobs_dir: str, reason: str) -> None:
    """It used to fail only in the worker's __init__, which BentoML restarts for ever."""
    (tmp_path / "file").write_text("")
    output = _start_up_output(served_models, tmp_path,
                              COUNTERFEIT_JOBS_DIR=str(tmp_path / jobs_dir))
    line = _the_one_line(output)
    assert f"COUNTERFEIT_JOBS_DIR: {tmp_path / jobs_dir}: " in line and reason in line


def test_job_state_files_that_are_not_job_states_are_skipped_with_one_line_each(
        served_models: Path, tmp_path: Path) -> None:
    """A truncated or non-object state file used to crash every worker's __init__, which
    BentoML restarts for ever: the service never became ready."""
    broken = {"a" * 32: '{"job_id": "aaaa", "state": "runn', "b" * 32: "[1, 2]"}
    for job_id, text in broken.items():
        (tmp_path / "jobs" / job_id).mkdir(parents=True)
        (tmp_path / "jobs" / job_id / "state.json").write_text(text)
        (tmp_path / "jobs" / "active").mkdir(exist_ok=True)
        (tmp_path / "jobs" / "active" / job_id).touch()
    with serving(served_models, tmp_path, COUNTERFEIT_DEFAULT_MODEL="tiny") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [client.post("/jobs/status", json={"job_id": job_id}) for job_id in broken]
        job = client.post("/jobs/submit", json={"n": 10, "seed": 1}).json()
        assert wait_for_job(client, job["job_id"])["state"] == "completed"
        metrics = client.get("/metrics").text
        deadline = time.monotonic() + 30  # the job supervisor's first round says so
        while sum(f"skipped job {job_id}" in server.log.read_text() for job_id in broken) < 2:
            assert time.monotonic() < deadline, log_tail(server.log)
            time.sleep(0.1)
    log = server.log.read_text()
    for job_id, answer in zip(broken, answers, strict=True):
        assert answer.status_code == 404 and "state file is unreadable" in answer.text
        assert sum(f"skipped job {job_id}" in line for line in log.splitlines()) == 1, log
    assert "Traceback" not in log
    assert 'counterfeit_jobs_finished_total{state="completed"} 1.0' in metrics


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


@pytest.mark.parametrize(("bentofile", "onnxruntime"), [
    ("bentofile.yaml", "onnxruntime"), ("bentofile.gpu.yaml", "onnxruntime-gpu")])
def test_bentoml_build_packages_the_service_and_the_shipped_models(
        tmp_path: Path, bentofile: str, onnxruntime: str) -> None:
    shipped = sorted(p.parent.name for p in (REPO / "models").glob("*/generator.onnx"))
    if not shipped:
        pytest.skip("no model shipped under models/ yet")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "True"}
    proc = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", bentofile],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one onnxruntime package: the CPU one, or the GPU one alone (they overwrite each other)
    requirements = next((tmp_path / "bentos").rglob("env/python/requirements.txt")).read_text()
    packages = {re.split(r"[<>=\s]", line)[0] for line in requirements.splitlines()}
    assert {"onnxruntime", "onnxruntime-gpu"} & packages == {onnxruntime}
    if onnxruntime == "onnxruntime-gpu":
        # the image's CUDA major must be the one the allowed onnxruntime-gpu builds need:
        # 12 up to 1.26, 13 from 1.27 (their wheels' nvidia-cuda-runtime requirement)
        cuda = re.search(r'cuda_version:\s*"(\d+)\.', (REPO / bentofile).read_text())
        assert cuda and cuda.group(1) == "12"
        assert "onnxruntime-gpu>=1.20,<1.27" in requirements.splitlines()
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


def test_unknown_paths_share_one_metrics_label(served_models: Path, tmp_path: Path) -> None:
    """BentoML labelled its request metrics with the raw path: each distinct unknown path
    became time series of its own (10,000 of them: /metrics 38 MiB, the worker +340 MiB).
    Now /metrics does not grow with the number of distinct paths."""
    with serving(served_models, tmp_path, COUNTERFEIT_DEFAULT_MODEL="tiny") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/sample", json={"n": 1}).status_code == 200
        sizes = []
        for start, stop in ((0, 1000), (1000, 3000)):
            codes = {client.get(f"/no-such-path-{i}").status_code for i in range(start, stop)}
            assert codes == {404}
            metrics = client.get("/metrics").content
            sizes.append(len(metrics))
    print(f"/metrics after 1,000 and 3,000 unknown paths: {sizes} bytes")
    assert sizes[1] < 1 << 20 and sizes[1] - sizes[0] < 1024  # a few digits more, no series
    counts, durations, in_progress = {}, {}, {}  # (endpoint, status) / endpoint -> value
    last_request = 0.0
    for line in metrics.decode().splitlines():
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        value = float(line.split()[-1]) if labels else 0.0
        if line.startswith("bentoml_service_request_total{"):
            counts[labels["endpoint"], labels["http_response_code"]] = value
        elif line.startswith("bentoml_service_request_duration_seconds_count{"):
            durations[labels["endpoint"], labels["http_response_code"]] = value
        elif line.startswith("bentoml_service_request_in_progress{"):
            in_progress[labels["endpoint"]] = value
        elif line.startswith("bentoml_service_last_request_timestamp_seconds{"):
            last_request = value
    assert counts["/{unmatched}", "404"] == 3000 and counts["/sample", "200"] == 1
    assert durations == {key: n for key, n in counts.items() if n}  # one per answer
    assert in_progress["/sample"] == 0 and in_progress["/{unmatched}"] == 0
    assert abs(last_request - time.time()) < 60
    assert {endpoint for endpoint, _ in counts} <= {*OWN_ROUTES, "/readyz", "/{unmatched}"}
