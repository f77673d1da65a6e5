"""The HTTP surface, in-process (BentoML's ASGI app under starlette's TestClient), on the
synthetic `tiny` model (the shipped model's shapes) unless a test names another."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.jobs import wait_for_job


@pytest.fixture(scope="module")
def model(runtime_models: dict):
    return runtime_models["tiny"]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_seeded_sample_is_g_of_the_contract_latents(client, model) -> None:
    r = client.post("/sample", json={"n": 7, "seed": 42, "format": "npy"})
    assert r.status_code == 200 and r.headers["x-seed"] == "42"
    images = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert images.shape == (7, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images, model.generate(model.latents(7, 42)), atol=1e-5)


def test_unseeded_sample_reports_its_seed_and_png_is_a_grid(client, model) -> None:
    r = client.post("/sample", json={"n": 16})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    seed = int(r.headers["x-seed"])
    with Image.open(io.BytesIO(r.content)) as picture:
        assert picture.size == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))
    again = client.post("/sample", json={"n": 16, "seed": seed})
    assert again.content == r.content


def test_interpolation_ends_at_both_endpoints(client, model) -> None:
    for method in ("linear", "slerp"):
        r = client.post("/interpolate", json={"seed_start": 1, "seed_end": 2, "steps": 5,
                                              "method": method, "format": "npy"})
        assert r.status_code == 200
        path = np.load(io.BytesIO(r.content))
        assert path.shape == (5, 28, 28)
        np.testing.assert_allclose(path[0], model.generate(model.latents(1, 1))[0], atol=1e-5)
        np.testing.assert_allclose(path[-1], model.generate(model.latents(1, 2))[0], atol=1e-5)
    z = [0.5] * 100
    r = client.post("/interpolate", json={"z_start": z, "seed_end": 3, "format": "npy"})
    assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (10, 28, 28)


def test_score_npy_float_uint8_and_png(client, model) -> None:
    images = model.generate(model.latents(3, 0))
    expected = 1 / (1 + np.exp(-model.logits(images)))
    for payload in (npy(images), npy(images.reshape(3, 784).astype(np.float64))):
        r = client.post("/score", files={"file": ("x.npy", payload)})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["scores"], expected, atol=1e-5)
    as_uint8 = np.round(images * 255).astype(np.uint8)
    r = client.post("/score", files={"file": ("x.npy", npy(as_uint8))})
    assert r.status_code == 200 and len(r.json()["scores"]) == 3
    png = io.BytesIO()
    Image.fromarray(as_uint8[0], "L").save(png, format="PNG")
    r = client.post("/score", files={"file": ("x.png", png.getvalue())})
    assert r.status_code == 200 and r.json()["model"] == "tiny"
    assert r.json()["scores"][0] == pytest.approx(
        1 / (1 + np.exp(-model.logits(as_uint8[:1] / 255.0)[0])), abs=1e-5)


def test_models_lists_cards_with_the_provider(client) -> None:
    r = client.post("/models", json={})
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == "tiny"
    assert body["models"]["tiny"]["provider"] == "CPUExecutionProvider"
    assert body["models"]["tiny"]["latent"]["dim"] == 100
    assert client.get("/models").json() == body


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 28x28 PNG whose header claims another size (a decompression bomb)."""
    import struct
    import zlib

    raw = bytearray(_png((28, 28)))
    ihdr = raw[12:29]  # chunk type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def _png_16bit(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((28, 28), value, np.uint16)).save(out, format="PNG")
    return out.getvalue()


def _json(route: str, text: str) -> tuple[str, dict]:
    """A raw JSON body (NaN, Infinity, broken syntax: what json= would not send)."""
    return route, {"content": text, "headers": {"content-type": "application/json"}}


def _upload(payload: bytes, route: str = "/score") -> tuple[str, dict]:
    return route, {"files": {"file": ("x", payload)}}


Z = [0.0] * 100
# (route, request, status, field, words the error must contain): every endpoint, each kind
# of hostile or malformed input
HOSTILE = {
    # out of range, wrong type, missing
    "sample n=0": ("/sample", {"json": {"n": 0}}, 400, "n", "greater than or equal to 1"),
    "sample n=1025": ("/sample", {"json": {"n": 1025}}, 400, "n", "1024"),
    "sample n=1e9": ("/sample", {"json": {"n": 10**9}}, 400, "n", "1024"),
    "sample n string": ("/sample", {"json": {"n": "many"}}, 400, "n", "integer"),
    "sample n float": ("/sample", {"json": {"n": 2.5}}, 400, "n", "integer"),
    "sample n list": ("/sample", {"json": {"n": [1]}}, 400, "n", "integer"),
    "sample seed<0": ("/sample", {"json": {"seed": -1}}, 400, "seed", "0"),
    "sample seed 2^64": ("/sample", {"json": {"seed": 2**64}}, 400, "seed", "9223372036854775807"),
    "sample seed string": ("/sample", {"json": {"seed": "x"}}, 400, "seed", "integer"),
    "sample format gif": ("/sample", {"json": {"format": "gif"}}, 400, "format", "png"),
    "sample format int": ("/sample", {"json": {"format": 3}}, 400, "format", "png"),
    "sample body a list": ("/sample", {"json": [1, 2]}, 400, "body", "object"),
    "sample broken json": _json("/sample", '{"n": ') + (400, "body", "JSON"),
    "sample not utf-8": _json("/sample", b'{"n": "\xff\xfe"}'.decode("latin-1"))
    + (400, "n", "integer"),
    # unknown model names, path-like ones included
    "sample model unknown": ("/sample", {"json": {"model": "nope"}}, 404, "model", "tiny"),
    "sample model path": ("/sample", {"json": {"model": "../../etc/passwd"}}, 404, "model",
                          "unknown"),
    "sample model int": ("/sample", {"json": {"model": 5}}, 400, "model", "string"),
    "score model path": ("/score", {"files": {"file": ("x", b"")},
                                    "data": {"model": "/etc/passwd"}}, 404, "model", "unknown"),
    "job model path": ("/jobs/submit", {"json": {"model": "../tiny"}}, 404, "model",
                       "unknown"),
    # latents: missing, both, wrong length, NaN, Inf, huge, wrong type
    "interpolate no end": ("/interpolate", {"json": {"seed_start": 1}}, 400, "seed_end",
                           "exactly one"),
    "interpolate nothing": ("/interpolate", {"json": {}}, 400, "seed_start", "exactly one"),
    "interpolate both": ("/interpolate", {"json": {"seed_start": 1, "z_start": Z,
                                                   "seed_end": 2}}, 400, "seed_start",
                         "exactly one"),
    "interpolate z short": ("/interpolate", {"json": {"z_start": [0.0] * 3, "seed_end": 2}},
                            400, "z_start", "100 numbers"),
    "interpolate z 2-d": ("/interpolate", {"json": {"z_start": [Z], "seed_end": 2}}, 400,
                          "z_start", "z_start[0]: Input should be a valid number"),
    "interpolate z strings": ("/interpolate", {"json": {"z_start": ["a"] * 100, "seed_end": 2}},
                              400, "z_start", "z_start[0]: Input should be a valid number"),
    "interpolate z huge": ("/interpolate", {"json": {"z_start": [1e9] * 100, "seed_end": 2}},
                           400, "z_start", "1000"),
    "interpolate z NaN": _json("/interpolate", '{"seed_end": 2, "z_start": ['
                               + ", ".join(["NaN"] * 100) + "]}") + (400, "z_start", "finite"),
    "interpolate z Infinity": _json("/interpolate", '{"seed_end": 2, "z_start": ['
                                    + ", ".join(["Infinity"] * 100) + "]}")
    + (400, "z_start", "finite"),
    "interpolate z 1e999": _json("/interpolate", '{"seed_end": 2, "z_start": ['
                                 + ", ".join(["1e999"] * 100) + "]}") + (400, "z_start", "finite"),
    "interpolate steps=1": ("/interpolate", {"json": {"seed_start": 1, "seed_end": 2, "steps": 1}},
                            400, "steps", "2"),
    "interpolate steps=257": ("/interpolate", {"json": {"seed_start": 1, "seed_end": 2,
                                                        "steps": 257}}, 400, "steps", "256"),
    "interpolate method": ("/interpolate", {"json": {"seed_start": 1, "seed_end": 2,
                                                     "method": "cubic"}}, 400, "method", "slerp"),
    # uploads: empty, truncated, not an image, wrong PNG, bombs, hostile .npy
    "score no file": ("/score", {"files": {"model": (None, "tiny")}}, 400, "file",
                      "no 'file' file"),
    "score empty": _upload(b"") + (400, "file", "empty"),
    "score text": _upload(b"hello") + (400, "file", "upload a .npy array or a PNG"),
    "score jpeg": _upload(b"\xff\xd8\xff\xe0" + b"\0" * 100) + (400, "file", "PNG"),
    "score npy truncated": _upload(npy(np.zeros((2, 28, 28), np.float32))[:-10])
    + (400, "file", "bytes"),
    "score npy header only": _upload(npy(np.zeros((2, 28, 28), np.float32))[:20])
    + (400, "file", "header"),
    "score npy wrong shape": _upload(npy(np.zeros((2, 27, 28), np.float32)))
    + (400, "file", "shape"),
    "score npy 1-d": _upload(npy(np.zeros(784, np.float32))) + (400, "file", "shape"),
    "score npy zero images": _upload(npy(np.zeros((0, 784), np.float32)))
    + (400, "file", "between 1 and 1024"),
    "score npy too many": _upload(npy(np.zeros((1025, 784), np.uint8)))
    + (400, "file", "between 1 and 1024"),
    "score npy NaN": _upload(npy(np.full((1, 28, 28), np.nan, np.float32)))
    + (400, "file", "finite"),
    "score npy Inf": _upload(npy(np.full((1, 28, 28), np.inf, np.float64)))
    + (400, "file", "finite"),
    "score npy out of range": _upload(npy(np.full((1, 28, 28), 2.0, np.float32)))
    + (400, "file", "[0, 1]"),
    "score npy negative": _upload(npy(np.full((1, 28, 28), -0.5, np.float32)))
    + (400, "file", "[0, 1]"),
    "score npy complex": _upload(npy(np.zeros((1, 28, 28), np.complex64))) + (400, "file", "dtype"),
    "score npy int32": _upload(npy(np.zeros((1, 28, 28), np.int32))) + (400, "file", "dtype"),
    "score npy object": _upload(npy(np.array([{"a": 1}], dtype=object))) + (400, "file", "dtype"),
    "score npy fortran": _upload(npy(np.asfortranarray(np.zeros((2, 784), np.float32))))
    + (400, "file", "fortran"),
    "score npy huge shape": _upload(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order':"
                                    b" False, 'shape': (1000000000000, 784), }"
                                    + b" " * 46 + b"\n") + (400, "file", "between 1 and 1024"),
    "score png 29x28": _upload(_png((29, 28))) + (400, "file", "28x28"),
    "score png RGB 64x64": _upload(_png((64, 64), "RGB")) + (400, "file", "28x28"),
    "score png bomb": _upload(_png_bomb(100_000, 100_000)) + (400, "file", "PNG"),
    "score png tall bomb": _upload(_png_bomb(28, 5000)) + (400, "file", "28x5000"),
    "score png truncated": _upload(_png((28, 28))[:40]) + (400, "file", "PNG"),
    "score filename 300 chars": ("/score", {"files": {"file": ("a" * 300 + ".npy", b"x")}},
                                 400, "file", "128"),
    # jobs: bad bodies at submit, unknown and path-like ids
    "job n=0": ("/jobs/submit", {"json": {"n": 0}}, 400, "n", "greater than or equal to 1"),
    "job n too big": ("/jobs/submit", {"json": {"n": 100_001}}, 400, "n", "100000"),
    "job n string": ("/jobs/submit", {"json": {"n": "1"}}, 400, "n", "integer"),
    "job seed<0": ("/jobs/submit", {"json": {"seed": -3}}, 400, "seed", "0"),
    "job broken json": _json("/jobs/submit", "{") + (400, "body", "JSON"),
    "job unknown field": ("/jobs/submit", {"json": {"colour": "red"}}, 400, "colour",
                          "not permitted"),
    "sample misspelt field": ("/sample", {"json": {"seeds": 3}}, 400, "seeds",
                              "not permitted"),
    "job status unknown id": ("/jobs/status", {"json": {"job_id": "0" * 32}}, 404, "job_id",
                              "no such job"),
    "job status path id": ("/jobs/status", {"json": {"job_id": "../etc"}}, 400, "job_id",
                           "not a job id"),
    "job status no id": ("/jobs/status", {"json": {}}, 400, "job_id", "required"),
    "job result unknown id": ("/jobs/result", {"json": {"job_id": "0" * 32}}, 404, "job_id",
                              "no such job"),
    "job result path id": ("/jobs/result", {"json": {"job_id": "/etc/passwd"}}, 400, "job_id",
                           "not a job id"),
    "job cancel unknown id": ("/jobs/cancel", {"json": {"job_id": "f" * 32}}, 404, "job_id",
                              "no such job"),
    "job cancel path id": ("/jobs/cancel", {"json": {"job_id": "../.."}}, 400, "job_id",
                           "not a job id"),
    # models without the network or the input a request needs
    "score without D": ("/score", {"files": {"file": ("x", b"x")}, "data": {"model": "gonly"}},
                        400, "model", "no discriminator"),
    "label for an unconditional model": ("/sample", {"json": {"label": 3}}, 400, "label",
                                         "takes no label"),
    "conditional without label": ("/sample", {"json": {"model": "cond"}}, 400, "label",
                                  "[0, 9]"),
    "label out of range": ("/sample", {"json": {"model": "cond", "label": 10}}, 400, "label",
                           "[0, 9]"),
    "labels of the wrong count": ("/sample", {"json": {"model": "cond", "n": 3,
                                                       "label": [1, 2]}}, 400, "label", "3"),
    "label 10^30": ("/sample", {"json": {"model": "cond", "label": 10**30}}, 400, "label",
                    "less than or equal to 9999"),
    "label list 10^30": ("/sample", {"json": {"model": "cond", "n": 1, "label": [10**30]}},
                         400, "label", "less than or equal to 9999"),
    "label string": ("/sample", {"json": {"model": "cond", "label": "3"}}, 400, "label",
                     "integer"),
    "label negative": ("/sample", {"json": {"model": "cond", "label": -1}}, 400, "label",
                       "greater than or equal to 0"),
    "score label 10^30": ("/score", {"files": {"file": ("x", b"x")},
                                     "data": {"model": "cond", "label": str(10**30)}}, 400,
                          "label", "9999"),
    "rgb npy of grey shape": ("/score", {"files": {"file": ("x", npy(np.zeros((1, 28, 28),
                                                                             np.float32)))},
                                         "data": {"model": "rgb"}}, 400, "file",
                              "(n, 3, 32, 32) or (n, 3072)"),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_a_quick_4xx_naming_the_field_and_the_limit(client, case) -> None:
    route, request, status, field, words = case
    started = time.perf_counter()
    r = client.post(route, **request)
    elapsed = time.perf_counter() - started
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and words in body["error"], body
    # a hang detector, not a speed test: a stuck request would wait for the 300 s timeout
    assert elapsed < 10.0, f"{elapsed:.2f} s: hostile input must be refused, not hang"
    assert client.post("/sample", json={"n": 1, "format": "npy"}).status_code == 200


def test_a_16_bit_png_is_scaled_not_clipped(client) -> None:
    full = client.post("/score", files={"file": ("x.png", _png_16bit(65535))}).json()
    white = client.post("/score", files={"file": ("x.npy", npy(np.ones((1, 784), np.float32)))})
    assert full["scores"] == pytest.approx(white.json()["scores"], abs=1e-6)
    half = client.post("/score", files={"file": ("x.png", _png_16bit(32768))}).json()
    grey = client.post("/score", files={"file": ("x.npy", npy(np.full((1, 784), 32768 / 65535,
                                                                     np.float32)))})
    assert half["scores"] == pytest.approx(grey.json()["scores"], abs=1e-6)


def test_pickled_npy_is_refused_without_unpickling(client, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = npy(np.array([_Explode(str(marker))], dtype=object))
    r = client.post("/score", files={"file": ("x.npy", payload)})
    assert r.status_code == 400 and "dtype" in r.json()["error"]
    assert not marker.exists()


class _Explode:
    """Unpickling this writes a file: the test checks that never happens."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_text_in_the_file_field_is_never_fetched(client) -> None:
    r = client.post("/score", files={"file": (None, "http://127.0.0.1:9/x")})
    assert r.status_code == 400 and "not a text value" in r.json()["error"]
    r = client.post("/score", data={"file": "http://127.0.0.1:9/x"})  # form-encoded
    assert r.status_code == 415 and r.json()["field"] == "content-type"


def test_oversized_body_is_413_before_it_is_read(client) -> None:
    r = client.post("/score", files={"file": ("x.npy", b"\0" * (2 * 1024 * 1024))})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post("/sample", content=b"{" * (2 * 1024 * 1024),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_metrics_count_images(client) -> None:
    client.post("/sample", json={"n": 5, "seed": 1, "format": "npy"})
    text = client.get("/metrics").text
    lines = [line for line in text.splitlines()
             if line.startswith('counterfeit_images_generated_total{endpoint="sample"')]
    assert lines and float(lines[0].split()[-1]) >= 5
    assert 'counterfeit_model_info{model="tiny",provider="CPUExecutionProvider"' in text


def test_job_submit_poll_and_result(client, model) -> None:
    r = client.post("/jobs/submit", json={"n": 1500, "seed": 9})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["n"] == 1500 and job["seed"] == 9
    status = wait_for_job(client, job["job_id"])
    assert status["state"] == "completed" and status["progress"] == 1.0
    result = client.post("/jobs/result", json={"job_id": job["job_id"]})
    assert result.status_code == 200 and result.headers["x-seed"] == "9"
    assert result.headers["content-length"] == str(len(result.content))
    assert f'filename="{job["job_id"]}.npy"' in result.headers["content-disposition"]
    got = np.load(io.BytesIO(result.content))
    assert got.shape == (1500, 28, 28) and got.dtype == np.uint8
    expected = np.round(model.generate(model.latents(1500, 9)) * 255).astype(np.uint8)
    assert np.abs(got.astype(int) - expected).max() <= 1  # rounding at x.5 only


def test_a_job_can_be_canceled_once(client) -> None:
    job = client.post("/jobs/submit", json={"n": 100_000, "seed": 1}).json()
    r = client.post("/jobs/cancel", json={"job_id": job["job_id"]})
    assert r.status_code == 200 and r.json()["state"] == "canceled", r.text
    again = client.post("/jobs/cancel", json={"job_id": job["job_id"]})
    assert again.status_code == 409 and again.json()["error"] == "job_id: job is already canceled"
    result = client.post("/jobs/result", json={"job_id": job["job_id"]})
    assert result.status_code == 409 and "job is canceled" in result.json()["error"]


def test_the_old_job_routes_are_gone(client) -> None:
    for route in ("/generate_job/submit", "/generate_job", "/job_status", "/job_result"):
        assert client.post(route, json={}).status_code == 404, route


def test_multipart_without_a_boundary_is_a_400_not_a_500(client) -> None:
    r = client.post("/jobs/status", content=b'{"job_id": "x"}',
                    headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and r.json()["field"] == "content-type"


def test_openapi_declares_both_image_media_types_and_the_error_body(client) -> None:
    spec = client.get("/docs.json").json()
    ok = spec["paths"]["/sample"]["post"]["responses"]["200"]["content"]
    assert set(ok) == {"image/png", "application/octet-stream"}
    bad = spec["paths"]["/score"]["post"]["responses"]["400"]["content"]["application/json"]
    assert bad["schema"]["$ref"] == "#/components/schemas/Error"
    assert spec["components"]["schemas"]["Error"]["required"] == ["error", "field"]


def test_an_rgb_model_with_a_normal_latent_is_served_by_the_same_routes(
        client, runtime_models: dict) -> None:
    """Every shape follows the card: (3, 32, 32) images, a normal latent of 128."""
    rgb = runtime_models["rgb"]
    r = client.post("/sample", json={"n": 4, "seed": 5, "format": "npy", "model": "rgb"})
    assert r.status_code == 200, r.text
    images = np.load(io.BytesIO(r.content))
    assert images.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(rgb.latents(4, 5), np.random.default_rng(5).standard_normal(
        (4, 128)).astype(np.float32))
    np.testing.assert_allclose(images, rgb.generate(rgb.latents(4, 5)), atol=1e-5)
    grid = client.post("/sample", json={"n": 4, "seed": 5, "model": "rgb"})
    with Image.open(io.BytesIO(grid.content)) as picture:
        assert picture.mode == "RGB" and picture.size == (2 * (2 * 34 + 2), 2 * (2 * 34 + 2))
        # the first image's top-left pixel, enlarged 2x after a 2-pixel gap
        top_left = np.asarray(picture)[4, 4]
    np.testing.assert_array_equal(top_left, np.round(images[0, :, 0, 0] * 255))

    r = client.post("/interpolate", json={"seed_start": 1, "z_end": [0.0] * 128, "steps": 3,
                                          "format": "npy", "model": "rgb"})
    assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (3, 3, 32, 32)

    expected = 1 / (1 + np.exp(-rgb.logits(images)))
    for payload in (npy(images), npy(images.reshape(4, -1)),
                    npy(np.round(images * 255).astype(np.uint8))):
        r = client.post("/score", files={"file": ("x.npy", payload)}, data={"model": "rgb"})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["scores"], expected, atol=5e-3)
    png = io.BytesIO()
    Image.fromarray(np.round(images[0].transpose(1, 2, 0) * 255).astype(np.uint8), "RGB") \
        .save(png, format="PNG")
    r = client.post("/score", files={"file": ("x.png", png.getvalue())}, data={"model": "rgb"})
    assert r.status_code == 200 and r.json()["scores"][0] == pytest.approx(expected[0], abs=5e-3)

    job = client.post("/jobs/submit", json={"n": 40, "seed": 3, "model": "rgb"}).json()
    assert wait_for_job(client, job["job_id"])["state"] == "completed"
    got = np.load(io.BytesIO(client.post("/jobs/result", json={"job_id": job["job_id"]}).content))
    assert got.shape == (40, 3, 32, 32)
    expected_job = np.round(rgb.generate(rgb.latents(40, 3)) * 255)
    assert np.abs(got - expected_job).max() <= 1


def test_a_generator_without_a_discriminator_samples_but_does_not_score(client) -> None:
    r = client.post("/sample", json={"n": 2, "seed": 0, "format": "npy", "model": "gonly"})
    assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (2, 16, 16)
    r = client.post("/score", files={"file": ("x.npy", npy(np.zeros((1, 16, 16), np.float32)))},
                    data={"model": "gonly"})
    assert r.status_code == 400 and r.json()["field"] == "model"
    assert r.json()["error"].startswith("model: model gonly has no discriminator that scores")
    assert "models that can /score: ['cond', 'mnist-mlp', 'rgb', 'tiny']" in r.json()["error"]


def test_a_conditional_model_takes_one_label_or_one_per_image(client, runtime_models) -> None:
    cond = runtime_models["cond"]
    r = client.post("/sample", json={"n": 3, "seed": 4, "format": "npy", "model": "cond",
                                     "label": [0, 5, 9]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)),
                               cond.generate(cond.latents(3, 4), np.array([0, 5, 9])), atol=1e-5)
    same = client.post("/sample", json={"n": 3, "seed": 4, "format": "npy", "model": "cond",
                                        "label": 5})
    np.testing.assert_allclose(np.load(io.BytesIO(same.content))[1],
                               np.load(io.BytesIO(r.content))[1], atol=1e-6)
    r = client.post("/score", files={"file": ("x.npy", npy(np.zeros((2, 784), np.float32)))},
                    data={"model": "cond", "label": "7"})
    assert r.status_code == 200 and len(r.json()["scores"]) == 2


def test_a_conditional_job_takes_one_label_or_one_per_image(client, runtime_models) -> None:
    cond = runtime_models["cond"]
    per_image = [i % 10 for i in range(1500)]
    for label, classes in ((7, np.full(1500, 7)), (per_image, np.array(per_image))):
        job = client.post("/jobs/submit", json={"n": 1500, "seed": 6, "model": "cond",
                                                "label": label})
        assert job.status_code == 202, job.text
        assert wait_for_job(client, job.json()["job_id"])["state"] == "completed"
        got = np.load(io.BytesIO(client.post("/jobs/result", json={
            "job_id": job.json()["job_id"]}).content))
        expected = np.round(cond.generate(cond.latents(1500, 6), classes) * 255)
        assert np.abs(got.reshape(1500, -1) - expected.reshape(1500, -1)).max() <= 1
    refused = client.post("/jobs/submit", json={"n": 10, "model": "cond"})
    assert refused.status_code == 400 and refused.json()["field"] == "label"
    refused = client.post("/jobs/submit", json={"n": 10, "label": 1})
    assert refused.status_code == 400 and "takes no label" in refused.json()["error"]


def _example_body(spec: dict, route: str) -> dict:
    """The body Swagger UI's "Try it out" sends: each property's `example`."""
    schema = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return {name: prop["example"] for name, prop in schema.get("properties", {}).items()
            if "example" in prop}


def test_the_api_page_is_counterfeits_own_and_every_field_is_described(client) -> None:
    page = client.get("/").text
    assert "<title>Counterfeit API</title>" in page and "googletagmanager" not in page
    assert "http" not in page.split("<body>")[1]  # no script or link off the service
    spec = client.get("/docs.json").json()
    from service import __version__

    assert spec["info"]["title"] == "Counterfeit" and spec["info"]["version"] == __version__
    assert "bentoml" not in json.dumps([spec["info"], spec["tags"]]).lower()
    assert "get" in spec["paths"]["/models"]
    assert set(spec["paths"]["/jobs/submit"]["post"]["responses"]) >= {"202", "400", "404"}
    for route in ("/sample", "/interpolate", "/jobs/submit", "/jobs/status", "/jobs/result",
                  "/jobs/cancel", "/score"):
        content = spec["paths"][route]["post"]["requestBody"]["content"]
        schema = next(iter(content.values()))["schema"]
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{route} {name} has no description"


@pytest.mark.parametrize("route", ["/sample", "/interpolate", "/jobs/submit", "/models"])
def test_every_generated_example_succeeds(client, route: str) -> None:
    """Swagger UI's example for each self-contained route answers 2xx. (/jobs/status and
    /jobs/result need a job_id from /jobs/submit; /score needs an uploaded file.)"""
    spec = client.get("/docs.json").json()
    body = _example_body(spec, route) if "requestBody" in spec["paths"][route]["post"] else {}
    r = client.post(route, json=body)
    assert r.status_code in (200, 202), (body, r.text)


def test_npy_as_uint8_is_the_float_answer_rounded_in_a_quarter_of_the_bytes(client) -> None:
    body = {"n": 6, "seed": 5, "format": "npy"}
    floats = client.post("/sample", json=body)
    pixels = client.post("/sample", json={**body, "dtype": "uint8"})
    assert pixels.status_code == 200, pixels.text
    as_float, as_uint8 = (np.load(io.BytesIO(r.content)) for r in (floats, pixels))
    assert as_uint8.dtype == np.uint8 and as_uint8.shape == as_float.shape
    np.testing.assert_array_equal(as_uint8, np.round(as_float * 255).astype(np.uint8))
    assert len(pixels.content) < len(floats.content) / 3
    walk = client.post("/interpolate", json={"seed_start": 0, "seed_end": 1, "steps": 3,
                                             "format": "npy", "dtype": "uint8"})
    assert np.load(io.BytesIO(walk.content)).dtype == np.uint8
    r = client.post("/sample", json={"n": 2, "format": "png", "dtype": "uint8"})
    assert r.status_code == 400 and r.json()["field"] == "dtype"
    r = client.post("/sample", json={"n": 2, "format": "npy", "dtype": "float16"})
    assert r.status_code == 400 and r.json()["field"] == "dtype"
