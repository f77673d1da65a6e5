"""The floor: the least Python any HTTP server here can spend on a /sample request. A raw
ASGI app (no framework, no middleware) for uvicorn with httptools and uvloop, calling the
shipped generator.onnx, with Counterfeit's own seed contract, npy and PNG encoders and,
with FLOOR_BATCHING=on, Counterfeit's own MicroBatcher fed by its own in-flight count, so
that `make bench` compares serving machinery, never different models or encodings.

    FLOOR_BATCHING=off uvicorn loadtests.baselines.floor:app --loop uvloop --http httptools

It checks only what it must to stay up (n an integer in [1, 1024], format npy or png);
everything else a real service does (models, labels, errors naming fields, metrics, load
shedding, jobs) it leaves out on purpose.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from loadtests.baselines.sample_request import parse
from service.asgi.load_shedding import read_body
from service.batcher import MicroBatcher
from service.contract.card import read_card
from service.images import encode_npy, encode_png_grid, to_uint8
from service.runtime import make_session

MODEL = Path(os.environ.get("COUNTERFEIT_MODELS_DIR",
                            Path(__file__).resolve().parents[2] / "models")) / "mnist-mlp"
THREADS = int(os.environ.get("FLOOR_THREADS", "1"))  # onnxruntime intra-op threads
BATCHING = os.environ.get("FLOOR_BATCHING", "off") == "on"

CARD = read_card(MODEL)
SESSION = make_session(MODEL / "generator.onnx", ["CPUExecutionProvider"], THREADS)
OUTPUT_SHAPE = CARD.image.card_shape
_in_flight = 0
gc.freeze()  # as the service: start-up's objects out of the collector's reach


def _generate(z: np.ndarray) -> np.ndarray:
    x = SESSION.run(None, {"z": z})[0]
    return np.clip(x, 0.0, 1.0, out=x)  # as the service: the same bytes for a seed


# Counterfeit's batching: the same class, the same limits, waiting only while other
# requests are in flight; its blocking call runs on a pool of 32 threads, as BentoML's.
BATCHER = MicroBatcher(_generate, 256, 0.002, in_flight=lambda: _in_flight) if BATCHING \
    else None
POOL = ThreadPoolExecutor(32) if BATCHING else None


async def _answer(send, status: int, body: bytes, content_type: bytes,
                  extra: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    global _in_flight
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/readyz":
        return await _answer(send, 200, b"ok", b"text/plain")
    if scope["path"] != "/sample" or scope["method"] != "POST":
        return await _answer(send, 404, b'{"error": "not found"}', b"application/json")
    body = await read_body(receive)
    if body is None:  # gone before its request was complete
        return
    try:
        n, seed, fmt, dtype = parse(json.loads(body or b"{}"))
    except ValueError as err:  # json.JSONDecodeError included
        return await _answer(send, 400, json.dumps({"error": str(err)}).encode(),
                             b"application/json")
    z = CARD.latent.sample(n, seed)
    if BATCHER is None:
        images = _generate(z)
    else:
        _in_flight += 1
        try:
            images = await asyncio.get_running_loop().run_in_executor(POOL, BATCHER, z)
        finally:
            _in_flight -= 1
    images = images.reshape(n, *OUTPUT_SHAPE)
    if fmt == "npy":
        body = encode_npy(to_uint8(images) if dtype == "uint8" else images)
        content_type = b"application/octet-stream"
    else:
        body, content_type = encode_png_grid(images, CARD.image), b"image/png"
    await _answer(send, 200, body, content_type, [(b"x-seed", str(seed).encode())])
