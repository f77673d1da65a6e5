"""The HTTP surface of Counterfeit (docs/http-api.md): one method per route. Models, shapes
and sizes come from the model cards (service/runtime.py), settings from service/settings.py;
every error is a 4xx {"error", "field"} (service/errors.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import Field
from starlette.responses import JSONResponse, Response, StreamingResponse

from service import metrics
from service.asgi import bentoml_fixes, connections, fast_routes, playground
from service.asgi.access import AccessGuard
from service.asgi.bentoml_fixes import in_work_thread
from service.asgi.fast_routes import FastRoutes
from service.asgi.http_guard import HttpGuard
from service.asgi.load_shedding import LoadShedder, requests_in_flight
from service.asgi.openapi import ApiDocs
from service.batcher import MicroBatcher
from service.contract.card import MAX_CLASSES, SEED_MAX, random_seed
from service.contract.latent_paths import lerp, slerp
from service.contract.masks import FAMILIES, masks
from service.errors import RequestError, answers_request_errors
from service.images import decode_mask, decode_upload, encode_npy, encode_png_grid, to_uint8
from service.jobs import JobLimits, JobRunner, JobStore
from service.jobs.store import FINISHED_STATES, LIVE_STATES
from service.runtime import TASKS, Model, default_model, load_models, threads_per_worker, why_not
from service.startup import check_or_exit, settings_or_exit
from service.validation import labels, latent_end, within_memory

SETTINGS = settings_or_exit()
MAX_SAMPLES = 1024
MAX_JOB_IMAGES = 100_000
MAX_STEPS = 256
MAX_COMPLETIONS = 64
# routes running at once per worker, so that concurrent small requests can batch
WORK_THREADS = 32
# the most rows a request alone in the worker runs and encodes on the event loop itself:
# single rows (16 measured slower under load: n = 16 PNG at 8 connections ran unbatched)
INLINE_MAX_ROWS = 1

# Request fields: type, limits, description and a working example, once each.
N = Annotated[int, Field(ge=1, le=MAX_SAMPLES, strict=True, description="How many images.",
                         examples=[16])]
Seed = Annotated[int | None, Field(
    ge=0, le=SEED_MAX, strict=True, examples=[42],
    description="Seed of the latents (the seed contract: docs/http-api.md); none: a random "
                "one, returned in the X-Seed header.")]
NpyType = Annotated[Literal["float32", "uint8"], Field(
    description="With format npy: float32 in [0, 1], or uint8 pixels (round(255 x), a "
                "quarter of the bytes).")]
ImageFormat = Annotated[Literal["png", "npy"], Field(
    description="png: one grid image; npy: a float32 array (n, *image shape) in [0, 1].")]
ModelName = Annotated[str | None, Field(
    description="A model of GET /models; none: the default model.", examples=[None])]
ClassLabel = Annotated[int, Field(ge=0, le=MAX_CLASSES - 1, strict=True)]
Label = Annotated[ClassLabel | list[ClassLabel] | None, Field(
    description="Conditional models only: the class of every image, or one per image.",
    examples=[None])]
EndSeed = Annotated[int | None, Field(
    ge=0, le=SEED_MAX, strict=True, examples=[1],
    description="This end's latent from a seed (the seed contract), or null and a z.")]
LatentList = Annotated[list[float] | None, Field(
    description="A latent vector of the model's latent size, instead of a seed.",
    examples=[None])]
JobId = Annotated[str, Field(description="The job_id that /jobs/submit returned.",
                             examples=["0123456789abcdef0123456789abcdef"])]
Upload = Annotated[Path, Field(description="A .npy of (n, *image shape) or (n, pixels), float "
                                           "in [0, 1] or uint8; or one PNG of the image's size.")]

log = logging.getLogger("counterfeit")
check_or_exit(SETTINGS)
bentoml_fixes.install(WORK_THREADS, tracing=SETTINGS.tracing)
connections.install(SETTINGS)  # request heads: size, time; idle and too many connections


def _observer(model: Model, network: str):
    seconds_of = metrics.INFERENCE_SECONDS.labels(model.name, network, model.provider)
    rows_of = metrics.INFERENCE_BATCH_ROWS.labels(model.name, network)

    def observe(rows: int, seconds: float) -> None:
        seconds_of.observe(seconds)
        rows_of.observe(rows)
    return observe


def _image_response(model: Model, images: np.ndarray, fmt: str, seed: int | None,
                    ctx: bentoml.Context | None, cols: int | None = None,
                    npy: np.ndarray | None = None, dtype: str = "float32") -> Response:
    """`images` as a PNG grid (`cols` wide), or as a .npy of `dtype` (of `npy` where that
    differs)."""
    headers = {"X-Seed": str(seed)} if seed is not None else {}
    if ctx is not None:
        ctx.response.status_code = 200
    if fmt == "npy":
        array = images if npy is None else npy
        array = to_uint8(array) if dtype == "uint8" else array.astype(np.float32)
        return Response(encode_npy(array), media_type="application/octet-stream",
                        headers=headers)
    if dtype != "float32":
        raise RequestError("dtype", "applies to format npy only (png is 8-bit already)")
    return Response(encode_png_grid(images, model.card.image, cols), media_type="image/png",
                    headers=headers)


async def _image_response_on_loop(model: Model, images: np.ndarray, fmt: str,
                                  seed: int | None, dtype: str) -> Response:
    """`_image_response` for a route on the event loop: encoded there for a small answer,
    on a work thread for a large one (a PNG grid of 1,024 images takes milliseconds)."""
    if len(images) <= INLINE_MAX_ROWS:
        return _image_response(model, images, fmt, seed, None, dtype=dtype)
    return await in_work_thread(_image_response, model, images, fmt, seed, None, dtype=dtype)


def _read_upload(file: object, field: str) -> bytes:
    """The bytes of an uploaded form file, within the body limit."""
    if not isinstance(file, Path) or not file.is_file():
        raise RequestError(field, f"upload a file (multipart form field '{field}')")
    if file.stat().st_size > SETTINGS.max_body_bytes:
        raise RequestError(field, f"over {SETTINGS.max_body_bytes} bytes", 413)
    return file.read_bytes()


def _check_masks(hidden: np.ndarray) -> None:
    """Each mask must leave G something to complete and something to complete it from."""
    counts = hidden.reshape(len(hidden), -1).sum(axis=1)
    pixels = hidden[0].size
    for i, count in enumerate(counts):
        if count == 0:
            raise RequestError("mask", f"the mask of image {i} hides no pixel: nothing to "
                               "complete")
        if count == pixels:
            raise RequestError("mask", f"the mask of image {i} hides every pixel: keep at "
                               "least one visible (/sample draws whole images)")


@bentoml.service(name="counterfeit", workers=SETTINGS.workers, threads=WORK_THREADS,
                 traffic={"timeout": 300}, metrics={"enabled": True},
                 logging={"access": {"enabled": SETTINGS.access_log}},
                 tracing={} if SETTINGS.tracing else {"excluded_urls": [".*"]})
class Counterfeit:
    def __init__(self) -> None:
        s = SETTINGS
        self.models = load_models(s.models_dir, s.device, threads_per_worker(s.workers))
        self.default = s.default_model or default_model(self.models)
        # the model of a request that names none, per task: the default model where it
        # can do the task, else the first that can (/inpaint: an inpainting model)
        self.defaults = {task: self.default if why_not(self.models[self.default], task) is None
                         else default_model(self.models, task) for task in TASKS}
        self.defaults["sample"] = self.default
        for m in self.models.values():
            metrics.MODEL_INFO.labels(m.name, m.provider, m.card.generator.sha256).set(1)
        limits = JobLimits(max_queued=s.max_queued_jobs, max_bytes=s.jobs_max_bytes,
                           retention_s=s.job_retention_hours * 3600,
                           lease_s=s.job_lease_seconds)
        self.jobs = JobRunner(JobStore(s.jobs_dir), self.models,
                              lambda m, z, c: self._generate(m, z, "jobs", c), limits,
                              queue_url=s.queue_url, workers=s.job_workers,
                              on_change=self._job_changed)
        self.jobs.start()
        self._job_changed("started")
        # one batcher per (model, network): concurrent requests share onnxruntime calls
        self.batchers = {
            (name, network): MicroBatcher(fn, s.batch_max_rows, s.batch_wait_ms / 1e3,
                                          on_batch=_observer(m, network),
                                          in_flight=None if s.batch_wait_always
                                          else requests_in_flight)
            for name, m in self.models.items()
            for network, fn in (("generator", m.generate), ("discriminator", m.logits))
            if network in m.sessions and m.card.conditioning is None
        } if s.batching else {}
        fast_routes.register(self, *(type(self).__dict__[name] for name in ("sample",
                                                                          "interpolate")))
        # What import and start-up built (BentoML, pydantic, the sessions: most of the
        # heap) is kept out of the garbage collector's reach: its full collections walked
        # all of it, pauses that made the p99 at n = 1 (docs/service.md, "The request path")
        gc.freeze()

    def __is_ready__(self) -> bool:
        return bool(self.models)

    @bentoml.on_shutdown
    def _stop_jobs(self) -> None:
        self.jobs.stop()  # jobs in progress go back to the queue, resumed where they were

    def _model(self, name: str | None, task: str = "sample") -> Model:
        """The model a request names, or the task's default, if it can do the task."""
        if name is None:
            name = self.defaults[task]
            if name is None:
                raise RequestError("model", f"no loaded model can /{task}: "
                                   f"{TASKS[task][1].split(':')[0]} (loaded: "
                                   f"{sorted(self.models)})", 404)
        if name not in self.models:
            raise RequestError("model", f"unknown model; loaded: {sorted(self.models)}", 404)
        m = self.models[name]
        reason = why_not(m, task)
        if reason is not None:
            able = sorted(n for n, other in self.models.items() if why_not(other, task) is None)
            raise RequestError("model", f"{reason}; models that can /{task}: {able}")
        return m

    def _generate(self, model: Model, z: np.ndarray, endpoint: str,
                  classes: np.ndarray | None = None) -> np.ndarray:
        images = self._run(model, "generator", z, classes)
        metrics.images_generated(model.name, endpoint).inc(len(z))
        return images

    async def _generate_on_loop(self, model: Model, z: np.ndarray, endpoint: str,
                                classes: np.ndarray | None = None) -> np.ndarray:
        """`_generate` for a route on the event loop: the model never runs on the loop
        except for a small request alone in the worker (INLINE_MAX_ROWS rows, a fraction
        of a millisecond), which thread hand-offs would only slow down."""
        batcher = self.batchers.get((model.name, "generator"))
        if batcher is not None and len(z) < SETTINGS.batch_max_rows:
            await asyncio.sleep(0)  # requests that arrived with this one get counted first
            if len(z) <= INLINE_MAX_ROWS and batcher.alone():
                images = batcher.run_alone(z)
            else:
                images = await asyncio.wrap_future(batcher.submit(z))
            metrics.images_generated(model.name, endpoint).inc(len(z))
            return images
        return await in_work_thread(self._generate, model, z, endpoint, classes)

    def _run(self, model: Model, network: str, x: np.ndarray,
             classes: np.ndarray | None) -> np.ndarray:
        batcher = self.batchers.get((model.name, network))
        if batcher is not None and len(x) < SETTINGS.batch_max_rows:
            return batcher(x)
        started = time.perf_counter()  # large requests are a batch by themselves
        fn = model.generate if network == "generator" else model.logits
        out = fn(x, classes)
        _observer(model, network)(len(x), time.perf_counter() - started)
        return out

    def _job_changed(self, state: str) -> None:
        if state in FINISHED_STATES:
            metrics.JOBS_FINISHED.labels(state).inc()
        counts = dict.fromkeys(LIVE_STATES, 0)
        for job_id in self.jobs.store.active_ids():
            try:
                counts[self.jobs.store.status(job_id)["state"]] += 1
            except (RequestError, KeyError):
                continue  # finished meanwhile, or unreadable (the supervisor says so)
        for live, count in counts.items():
            metrics.JOBS.labels(live).set(count)

    @bentoml.api(route="/sample")
    @answers_request_errors
    async def sample(self, n: N = 16, seed: Seed = None,
               format: ImageFormat = "png", model: ModelName = None, label: Label = None,
               dtype: NpyType = "float32") -> Annotated[bytes, ContentType("image/png")]:
        """`n` images from G. With a `seed`, the latents are the seed contract's, so the
        same seed gives the same images anywhere; the seed used is in `X-Seed`."""
        m = self._model(model)
        classes = labels(m, label, within_memory(m, "n", n))
        seed = random_seed() if seed is None else seed
        images = await self._generate_on_loop(m, m.latents(n, seed), "sample", classes)
        return await _image_response_on_loop(m, images, format, seed, dtype)

    @bentoml.api(route="/interpolate")
    @answers_request_errors
    async def interpolate(self,
                    seed_start: EndSeed = None, seed_end: EndSeed = None,
                    z_start: LatentList = None, z_end: LatentList = None,
                    steps: Annotated[int, Field(ge=2, le=MAX_STEPS, strict=True, examples=[10],
                                                description="Images on the path, both ends "
                                                            "included.")] = 10,
                    method: Annotated[Literal["linear", "slerp"], Field(
                        description="linear: the segment; slerp: the great circle.")] = "linear",
                    format: ImageFormat = "png", model: ModelName = None,
                    label: Label = None, dtype: NpyType = "float32"
                    ) -> Annotated[bytes, ContentType("image/png")]:
        """Images along a path in latent space, G(z_start) first and G(z_end) last. Each end
        is a seed or a latent vector (give `z_start` with `seed_start` null)."""
        m = self._model(model)
        within_memory(m, "steps", steps)
        ends = [latent_end(m, "start", seed_start, z_start),
                latent_end(m, "end", seed_end, z_end)]
        path = (lerp if method == "linear" else slerp)(ends[0], ends[1], steps)
        images = await self._generate_on_loop(m, path, "interpolate", labels(m, label, steps))
        return await _image_response_on_loop(m, images, format, None, dtype)

    @bentoml.api(route="/score")
    @answers_request_errors
    def score(self, ctx: bentoml.Context,
              file: Upload, model: ModelName = None,
              label: Annotated[int | None, Field(ge=0, le=MAX_CLASSES - 1, description=(
                  "Conditional models only: the class the images claim."))] = None
              ) -> dict:
        """D(x) for each uploaded image: the discriminator's probability that it is real."""
        m = self._model(model, "score")
        x = decode_upload(_read_upload(file, "file"), m.card.image)
        logits = self._run(m, "discriminator", x, labels(m, label, len(x)))
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        metrics.IMAGES_SCORED.labels(m.name).inc(len(x))
        for s in scores:
            metrics.DISCRIMINATOR_SCORE.labels(m.name).observe(float(s))
        return {"model": m.name, "scores": scores.tolist(), "logits": logits.tolist()}

    @bentoml.api(route="/invert")
    @answers_request_errors
    def invert(self, ctx: bentoml.Context, file: Upload, model: ModelName = None,
               format: Annotated[Literal["json", "png", "npy"], Field(
                   description="json: z, pixel errors and D's scores; png: each image beside "
                               "its reconstruction; npy: the reconstructions, float32 "
                               "(n, *image shape).")] = "json"
               ) -> Annotated[bytes, ContentType("application/json")]:
        """§7.2 of the paper: the latent z = E(x) of each uploaded image, from the model's
        encoder, with its reconstruction G(z), the mean squared pixel error of the
        reconstruction and D's score of it. /interpolate takes these z (z_start, z_end)."""
        m = self._model(model, "invert")
        x = decode_upload(_read_upload(file, "file"), m.card.image)
        started = time.perf_counter()
        z = m.encode(x)
        _observer(m, "encoder")(len(x), time.perf_counter() - started)
        reconstructions = self._generate(m, z, "invert")
        if format != "json":
            pairs = np.stack([x.reshape(reconstructions.shape), reconstructions], axis=1)
            return _image_response(m, pairs.reshape(-1, *reconstructions.shape[1:]), format,
                                   None, ctx, cols=2 * min(len(x), 8), npy=reconstructions)
        error = ((reconstructions.reshape(len(x), -1) - x.reshape(len(x), -1)) ** 2).mean(1)
        body = {"model": m.name, "z": z.tolist(), "pixel_error": error.tolist(),
                "scores": None}
        if m.has_discriminator:
            logits = self._run(m, "discriminator", reconstructions, None)
            body["scores"] = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).tolist()
        ctx.response.status_code = 200
        return JSONResponse(body)

    @bentoml.api(route="/inpaint")
    @answers_request_errors
    def inpaint(self, ctx: bentoml.Context, file: Upload, model: ModelName = None,
                # a Path defaulting to None: BentoML 1.4 hands an Optional[Path] the raw upload
                mask: Annotated[Path, Field(description=(
                    "A mask file instead of `family`: a .npy of (H, W) (one for every image) "
                    "or (n, H, W), bool or 0/1, 1 where hidden; or a PNG of the image's size, "
                    "white where hidden."))] = None,
                family: Annotated[Literal[FAMILIES] | None, Field(description=(
                    "A named mask instead of `mask`, drawn from `seed`: half, quarters, "
                    "centre or pixels."), examples=["half"])] = None,
                hidden: Annotated[float, Field(ge=0.01, le=0.99, description=(
                    "With `family`: the share of pixels hidden (a half is always 0.5; "
                    "quarters come in steps of 0.25)."))] = 0.5,
                k: Annotated[int, Field(ge=1, le=MAX_COMPLETIONS, strict=True, description=(
                    "Completions of each image."))] = 8,
                seed: Seed = None, format: ImageFormat = "png"
                ) -> Annotated[bytes, ContentType("image/png")]:
        """§7.3 of the paper: `k` completions of the hidden pixels of each uploaded image,
        given the visible ones (which are kept exactly). png: a row per image, the original,
        the masked input (hidden pixels grey) and the completions; npy: float32 (n, k,
        *image shape). The seed draws the named masks and the latents."""
        m = self._model(model, "inpaint")
        x = decode_upload(_read_upload(file, "file"), m.card.image)
        n, size = len(x), m.card.image.shape[1:]
        if n * k > MAX_SAMPLES:
            raise RequestError("k", f"at most {MAX_SAMPLES} completions in all: {n} images x "
                               f"k={k} is {n * k}")
        within_memory(m, "k", n * k)
        if (mask is None) == (family is None):
            raise RequestError("mask", "give exactly one of mask (a file) and family")
        seed = random_seed() if seed is None else seed
        if family is not None:
            if family not in m.card.inpainting.families:
                raise RequestError("family", f"model {m.name} was trained on "
                                   f"{list(m.card.inpainting.families)}, not {family!r}")
            hide = masks(family, n, seed, size, hidden)
        else:
            hide = decode_mask(_read_upload(mask, "mask"), size, n)
        _check_masks(hide)
        z = m.latents(n * k, seed)
        started = time.perf_counter()
        completions = m.complete(z, np.repeat(x, k, axis=0), np.repeat(hide, k, axis=0))
        _observer(m, "generator")(n * k, time.perf_counter() - started)
        metrics.images_generated(m.name, "inpaint").inc(n * k)
        completions = completions.reshape(n, k, *completions.shape[1:])
        if format == "npy":
            return _image_response(m, completions, "npy", seed, ctx)
        # the masked input: hidden pixels mid-grey in every channel
        shown = np.where(hide.reshape(n, 1, *size), 0.5, x.reshape(n, -1, *size))
        rows = np.concatenate([x.reshape(n, 1, *completions.shape[2:]),
                               shown.reshape(n, 1, *completions.shape[2:]), completions], axis=1)
        return _image_response(m, rows.reshape(-1, *completions.shape[2:]), "png", seed, ctx,
                               cols=k + 2)

    @bentoml.api(route="/jobs/submit")
    @answers_request_errors
    def submit_job(self, ctx: bentoml.Context,
                   n: Annotated[int, Field(ge=1, le=MAX_JOB_IMAGES, strict=True, examples=[1000],
                                           description="How many images.")] = 1000,
                   seed: Seed = None, model: ModelName = None, label: Label = None) -> dict:
        """Queue a batch-generation job: `n` images of the seed contract's latents. Poll
        /jobs/status with the returned job_id, then fetch /jobs/result. Jobs and their
        results live in the jobs folder, survive restarts (a job cut off is resumed where
        it was) and are removed after the retention time. A full queue is a 429, a full
        jobs folder a 507, both with Retry-After."""
        m = self._model(model)
        classes = labels(m, label, within_memory(m, "n", n, job=True))
        result = self.jobs.submit(m, n, random_seed() if seed is None else seed, classes)
        ctx.response.status_code = 202
        return result

    @bentoml.api(route="/jobs/status")
    @answers_request_errors
    def job_status(self, ctx: bentoml.Context, job_id: JobId) -> dict:
        """A job's state (queued, running, completed, failed, canceled), progress in
        [0, 1] and, when failed, why."""
        return self.jobs.store.status(job_id)

    @bentoml.api(route="/jobs/cancel")
    @answers_request_errors
    def cancel_job(self, ctx: bentoml.Context, job_id: JobId) -> dict:
        """Cancel a queued or running job: it stops at its next chunk and its partial
        result is removed. A finished job is a 409."""
        return self.jobs.cancel(job_id)

    @bentoml.api(route="/jobs/result")
    @answers_request_errors
    def job_result(self, ctx: bentoml.Context, job_id: JobId
                   ) -> Annotated[bytes, ContentType("application/octet-stream")]:
        """A completed job's images: a .npy of uint8 (n, *image shape), streamed; the
        seed is in X-Seed."""
        state, size, body = self.jobs.store.result(job_id)
        ctx.response.status_code = 200
        return StreamingResponse(body, media_type="application/octet-stream", headers={
            "Content-Length": str(size), "X-Seed": str(state["seed"]),
            "Content-Disposition": f'attachment; filename="{job_id}.npy"'})

    @bentoml.api(route="/models")
    def list_models(self) -> dict:
        """Every loaded model's card, with the execution provider in use (GET or POST)."""
        return {"default": self.default,
                "models": {name: {**m.card.raw, "provider": m.provider}
                           for name, m in self.models.items()}}


# a misspelt field is an error, not a silently ignored default
for _api in Counterfeit.apis.values():
    _api.input_spec.model_config["extra"] = "forbid"
    _api.input_spec.model_rebuild(force=True)
# the routes that take uploads: their file fields, the first required
FILE_ROUTES = {"/score": ("file",), "/invert": ("file",), "/inpaint": ("file", "mask")}
# the first added is the outermost: who may ask is settled before a byte of the body is read
Counterfeit.add_asgi_middleware(AccessGuard, api_key=SETTINGS.api_key,
                                allowed_hosts=SETTINGS.allowed_hosts,
                                keyless_paths=playground.PATHS)
Counterfeit.add_asgi_middleware(ApiDocs)
Counterfeit.add_asgi_middleware(playground.Playground)
Counterfeit.add_asgi_middleware(HttpGuard, max_body_bytes=SETTINGS.max_body_bytes,
                                file_routes=FILE_ROUTES, get_aliases={"/models"},
                                json_routes={api.route for api in Counterfeit.apis.values()}
                                - set(FILE_ROUTES))
# a request counts in flight once its body, bounded above, is in
Counterfeit.add_asgi_middleware(LoadShedder, max_in_flight=SETTINGS.max_in_flight)
# the innermost: /sample and /interpolate without BentoML's per-request machinery
Counterfeit.add_asgi_middleware(FastRoutes, server=f"BentoML Service/{Counterfeit.name}",
                                enabled=SETTINGS.fast_routes)
