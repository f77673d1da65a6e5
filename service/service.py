"""The HTTP surface of Counterfeit (DESIGN.md, "HTTP contract"): BentoML over the
onnxruntime runtime in `onnx_runtime.py`. Every API is `POST /<name>` with a JSON body;
every error is a 4xx `{"error", "field"}`."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import Field
from starlette.responses import JSONResponse, Response

from service import metrics
from service.batcher import MicroBatcher
from service.http_guard import HttpGuard
from service.images import decode_upload, encode_npy, encode_png_grid
from service.jobs import JobStore
from service.latent_paths import lerp, slerp
from service.onnx_runtime import DeviceError, Model, ModelError, load_models, settings_threads
from service.openapi_patch import OpenApiPatch
from service.request_errors import RequestError
from service.timeout_timer import install as install_timeout_fix

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("COUNTERFEIT_MODELS_DIR", REPO / "models"))
DEVICE = os.environ.get("COUNTERFEIT_DEVICE", "auto")
MAX_BODY_BYTES = int(os.environ.get("COUNTERFEIT_MAX_BODY_BYTES", 8 * 1024 * 1024))
WORKERS = int(os.environ.get("COUNTERFEIT_WORKERS", 1))
BATCHING = os.environ.get("COUNTERFEIT_BATCHING", "on") == "on"
# a log line per request costs ~10% of n=1 throughput on 2 cores; /metrics counts requests
ACCESS_LOG = os.environ.get("COUNTERFEIT_ACCESS_LOG", "off") == "on"
BATCH_MAX_ROWS = int(os.environ.get("COUNTERFEIT_BATCH_MAX_ROWS", 256))
BATCH_WAIT_MS = float(os.environ.get("COUNTERFEIT_BATCH_WAIT_MS", 2.0))
JOBS_DIR = Path(os.environ.get("COUNTERFEIT_JOBS_DIR")
                or Path.home() / ".local" / "state" / "counterfeit" / "jobs")
MAX_SAMPLES = 1024
MAX_JOB_IMAGES = 100_000
JOB_CHUNK = 1024
MAX_STEPS = 256
MAX_SEED = 2**63 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
ImageFormat = Literal["png", "npy"]


def _check_models_or_exit() -> None:
    """`bentoml serve` imports this module before it starts workers, and a worker whose
    __init__ fails is restarted forever: check the models here, so a broken one stops the
    server at once with one line naming the file."""
    try:
        names = sorted(load_models(MODELS_DIR, DEVICE, threads=1))
    except (ModelError, DeviceError) as err:
        raise SystemExit(f"counterfeit: cannot start: {err}") from None
    if os.environ.get("COUNTERFEIT_DEFAULT_MODEL", names[0]) not in names:
        raise SystemExit("counterfeit: cannot start: COUNTERFEIT_DEFAULT_MODEL="
                         f"{os.environ['COUNTERFEIT_DEFAULT_MODEL']!r} is not among the "
                         f"models in {MODELS_DIR}: {names}")


_check_models_or_exit()
install_timeout_fix()


def _observer(model: Model, network: str):
    def observe(rows: int, seconds: float) -> None:
        metrics.INFERENCE_SECONDS.labels(model.name, network, model.provider).observe(seconds)
        metrics.INFERENCE_BATCH_ROWS.labels(model.name, network).observe(rows)
    return observe


def _error(ctx: bentoml.Context, err: RequestError) -> JSONResponse:
    ctx.response.status_code = err.status  # BentoML applies ctx's status to any response
    return JSONResponse(err.body(), status_code=err.status)


def _check_int(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field, f"must be an integer in [{low}, {high}]")
    if not low <= value <= high:
        raise RequestError(field, f"must be in [{low}, {high}], got {value}")
    return value


def _image_response(images: np.ndarray, fmt: str, seed: int | None,
                    ctx: bentoml.Context) -> Response:
    headers = {"X-Seed": str(seed)} if seed is not None else {}
    ctx.response.status_code = 200
    if fmt == "npy":
        return Response(encode_npy(images.astype(np.float32)),
                        media_type="application/octet-stream", headers=headers)
    return Response(encode_png_grid(images), media_type="image/png", headers=headers)


# threads: requests in flight per worker, so that concurrent small requests can batch
@bentoml.service(name="counterfeit", workers=WORKERS, threads=32,
                 traffic={"timeout": 300}, metrics={"enabled": True},
                 logging={"access": {"enabled": ACCESS_LOG}})
class Counterfeit:
    def __init__(self) -> None:
        self.models: dict[str, Model] = load_models(MODELS_DIR, DEVICE,
                                                    threads=settings_threads(WORKERS))
        self.default = os.environ.get("COUNTERFEIT_DEFAULT_MODEL") or sorted(self.models)[0]
        for m in self.models.values():
            metrics.MODEL_INFO.labels(m.name, m.provider,
                                      m.card["files"]["generator.onnx"]["sha256"]).set(1)
        self.jobs = JobStore(JOBS_DIR)
        interrupted = self.jobs.mark_interrupted()
        if interrupted:
            logging.getLogger("counterfeit").warning(
                "%d job(s) were cut off by a restart and are marked failed", interrupted)
        self._count_jobs()
        # one batcher per (model, network): concurrent requests share onnxruntime calls
        self.batchers = {
            (name, network): MicroBatcher(fn, BATCH_MAX_ROWS, BATCH_WAIT_MS / 1e3,
                                          on_batch=_observer(m, network))
            for name, m in self.models.items()
            for network, fn in (("generator", m.generate), ("discriminator", m.logits))
        } if BATCHING else {}

    def __is_ready__(self) -> bool:
        return bool(self.models)

    def _model(self, name: str | None) -> Model:
        if name is None:
            return self.models[self.default]
        if name not in self.models:
            raise RequestError("model", f"unknown model; loaded: {sorted(self.models)}", 404)
        return self.models[name]

    def _generate(self, model: Model, z: np.ndarray, endpoint: str) -> np.ndarray:
        images = self._run(model, "generator", model.generate, z)
        metrics.IMAGES_GENERATED.labels(model.name, endpoint).inc(len(z))
        return images

    def _run(self, model: Model, network: str, fn: Callable[[np.ndarray], np.ndarray],
             x: np.ndarray) -> np.ndarray:
        batcher = self.batchers.get((model.name, network))
        if batcher is not None and len(x) < BATCH_MAX_ROWS:
            return batcher(x)
        started = time.perf_counter()  # large requests are a batch by themselves
        out = fn(x)
        _observer(model, network)(len(x), time.perf_counter() - started)
        return out

    @bentoml.api(route="/sample")
    def sample(self, ctx: bentoml.Context, n: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = 16,
               seed: Seed | None = None, format: ImageFormat = "png",
               model: str | None = None) -> Annotated[bytes, ContentType("image/png")]:
        """`n` images from G. With a `seed` the latents are
        default_rng(seed).uniform(low, high, (n, dim)); the seed used is in `X-Seed`."""
        try:
            m = self._model(model)
            if seed is None:
                seed = int(np.random.default_rng().integers(0, 2**31))
            images = self._generate(m, m.latents(n, seed), "sample")
            return _image_response(images, format, seed, ctx)
        except RequestError as err:
            return _error(ctx, err)

    @bentoml.api(route="/interpolate")
    def interpolate(self, ctx: bentoml.Context, seed_start: Seed | None = None,
                    seed_end: Seed | None = None, z_start: list[float] | None = None,
                    z_end: list[float] | None = None,
                    steps: Annotated[int, Field(ge=2, le=MAX_STEPS)] = 10,
                    method: Literal["linear", "slerp"] = "linear",
                    format: ImageFormat = "png", model: str | None = None
                    ) -> Annotated[bytes, ContentType("image/png")]:
        """Images along a path in latent space from one end to the other, both included."""
        try:
            m = self._model(model)
            ends = [self._endpoint(m, "start", seed_start, z_start),
                    self._endpoint(m, "end", seed_end, z_end)]
            path = (lerp if method == "linear" else slerp)(ends[0], ends[1], steps)
            return _image_response(self._generate(m, path, "interpolate"), format, None, ctx)
        except RequestError as err:
            return _error(ctx, err)

    @staticmethod
    def _endpoint(m: Model, which: str, seed: int | None, z: list[float] | None) -> np.ndarray:
        if (seed is None) == (z is None):
            raise RequestError(f"seed_{which}", f"give exactly one of seed_{which} and "
                               f"z_{which}")
        if seed is not None:
            return m.latents(1, seed)[0]
        vector = np.asarray(z, dtype=np.float64)
        if vector.shape != (m.latent_dim,):
            raise RequestError(f"z_{which}", f"must be a list of {m.latent_dim} numbers, got "
                               f"{vector.size}")
        if not np.isfinite(vector).all() or np.abs(vector).max() > 1e3:
            raise RequestError(f"z_{which}", "values must be finite and within ±1000")
        return vector.astype(np.float32)

    @bentoml.api(route="/score")
    def score(self, ctx: bentoml.Context, file: Path, model: str | None = None) -> dict:
        """D(x) for each uploaded image: a .npy of (n, 28, 28) or (n, 784), float in
        [0, 1] or uint8, or one 28 x 28 grey PNG."""
        try:
            m = self._model(model)
            if not isinstance(file, Path) or not file.is_file():
                raise RequestError("file", "upload a file (multipart form field 'file')")
            if file.stat().st_size > MAX_BODY_BYTES:
                raise RequestError("file", f"over {MAX_BODY_BYTES} bytes", 413)
            x = decode_upload(file.read_bytes())
            logits = self._run(m, "discriminator", m.logits, x)
            scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            metrics.IMAGES_SCORED.labels(m.name).inc(len(x))
            for s in scores:
                metrics.DISCRIMINATOR_SCORE.labels(m.name).observe(float(s))
            return {"model": m.name, "scores": scores.tolist(), "logits": logits.tolist()}
        except RequestError as err:
            return _error(ctx, err)

    def _count_jobs(self) -> None:
        for state, count in self.jobs.counts().items():
            metrics.JOBS.labels(state).set(count)

    @bentoml.task(route="/generate_job")
    def generate_job(self, ctx: bentoml.Context,
                     n: Annotated[int, Field(ge=1, le=MAX_JOB_IMAGES)] = 1000,
                     seed: Seed | None = None, model: str | None = None
                     ) -> Annotated[bytes, ContentType("application/octet-stream")]:
        """Up to 100,000 images as an .npz (`images` uint8 (n, 28, 28), `seed`). Submit at
        /generate_job/submit, poll /generate_job/status, fetch /generate_job/get; the result
        also stays on disk: /job_result fetches it after a restart."""
        # BentoML sets task_id for /submit; its synchronous POST /generate_job has none
        job_id = getattr(ctx.request.state, "task_id", None) or uuid.uuid4().hex
        try:
            m = self._model(model)
            if seed is None:
                seed = int(np.random.default_rng().integers(0, 2**31))
        except RequestError as err:
            return _error(ctx, err)
        try:
            self.jobs.start(job_id, n, seed, m.name)
            self._count_jobs()
            z = m.latents(n, seed)  # the seed contract over the whole job
            images = np.empty((n, 28, 28), np.uint8)
            for start in range(0, n, JOB_CHUNK):
                chunk = self._generate(m, z[start:start + JOB_CHUNK], "generate_job")
                images[start:start + len(chunk)] = np.round(chunk * 255).astype(np.uint8)
            path = self.jobs.complete(job_id, images, seed)
        except OSError as err:  # disk full, folder unwritable: the job fails, we stay up
            reason = f"could not write the result: {err.strerror or err}"
            self.jobs.fail(job_id, reason)
            return _error(ctx, RequestError("job", reason, 507))
        finally:
            self._count_jobs()
        ctx.response.status_code = 200
        return Response(path.read_bytes(), media_type="application/octet-stream")

    @bentoml.api(route="/job_status")
    def job_status(self, ctx: bentoml.Context, task_id: str) -> dict:
        """A job's state from the jobs folder (survives restarts)."""
        try:
            return {"task_id": task_id, **self.jobs.status(task_id)}
        except RequestError as err:
            return _error(ctx, err)

    @bentoml.api(route="/job_result")
    def job_result(self, ctx: bentoml.Context, task_id: str
                   ) -> Annotated[bytes, ContentType("application/octet-stream")]:
        """A finished job's .npz from the jobs folder (survives restarts)."""
        try:
            path = self.jobs.result(task_id)
        except RequestError as err:
            return _error(ctx, err)
        ctx.response.status_code = 200
        return Response(path.read_bytes(), media_type="application/octet-stream")

    @bentoml.api(route="/models")
    def list_models(self) -> dict:
        """The model card of every loaded model, with the execution provider in use."""
        return {"default": self.default,
                "models": {name: {**m.card, "provider": m.provider}
                           for name, m in self.models.items()}}


def _validate_job(body: dict) -> None:
    """A task's body is only parsed when it runs: check it at submit instead."""
    _check_int("n", body.get("n", 1000), 1, MAX_JOB_IMAGES)
    if body.get("seed") is not None:
        _check_int("seed", body["seed"], 0, MAX_SEED)
    name = body.get("model")
    if name is not None and not (isinstance(name, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]*",
                                                                         name)
                                 and (MODELS_DIR / name / "generator.onnx").is_file()):
        raise RequestError("model", "unknown model", 404)
    unknown = set(body) - {"n", "seed", "model"}
    if unknown:
        raise RequestError(sorted(unknown)[0], "unknown field")


Counterfeit.add_asgi_middleware(OpenApiPatch)
Counterfeit.add_asgi_middleware(HttpGuard, max_body_bytes=MAX_BODY_BYTES,
                                file_routes={"/score": "file"},
                                json_routes={"/generate_job/submit": _validate_job})
