"""/invert (§7.2: z = E(x), the reconstruction G(z), its pixel error and D's score) and
/inpaint (§7.3: k completions of the hidden pixels, the visible ones kept exactly) on the
synthetic models `tiny` (with an encoder) and `paint` (an inpainting model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.contract.masks import masks
from service.images import encode_npy


def npy(array: np.ndarray) -> bytes:
    return encode_npy(array)


def digits(n: int, seed: int = 0) -> np.ndarray:
    """n uint8 images of 28 x 28, so that the service's float32 is exactly value / 255."""
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, "L").save(out, format="PNG")
    return out.getvalue()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


# ---------------------------------------------------------------- /invert


def test_invert_returns_e_of_x_its_reconstruction_error_and_d_score(client,
                                                                     runtime_models) -> None:
    tiny, x = runtime_models["tiny"], digits(3)
    r = client.post("/invert", files={"file": ("x.npy", npy(x))}, data={"model": "tiny"})
    assert r.status_code == 200, r.text
    body = r.json()
    images = x.astype(np.float32) / 255
    z = tiny.encode(images)
    assert body["model"] == "tiny" and np.allclose(body["z"], z, atol=1e-6)
    reconstruction = tiny.generate(z)
    error = ((reconstruction - images) ** 2).reshape(3, -1).mean(axis=1)
    assert np.allclose(body["pixel_error"], error, rtol=1e-5)
    assert np.allclose(body["scores"], sigmoid(tiny.logits(reconstruction)), rtol=1e-5)


def test_invert_pictures_the_reconstructions_beside_the_originals(client,
                                                                  runtime_models) -> None:
    tiny, x = runtime_models["tiny"], digits(3, seed=1)
    r = client.post("/invert", files={"file": ("x.npy", npy(x))},
                    data={"model": "tiny", "format": "npy"})
    assert r.status_code == 200
    expected = tiny.generate(tiny.encode(x.astype(np.float32) / 255))
    assert np.allclose(np.load(io.BytesIO(r.content)), expected, atol=1e-6)
    r = client.post("/invert", files={"file": ("x.npy", npy(x))},
                    data={"model": "tiny", "format": "png"})
    assert r.headers["content-type"] == "image/png"
    # 3 pairs in one row: 6 images of 28 px, 2 px gaps, drawn 2x
    assert Image.open(io.BytesIO(r.content)).size == (2 * (6 * 30 + 2), 2 * 32)


def test_a_png_is_inverted_and_its_z_walks_on_in_interpolate(client, runtime_models) -> None:
    """The two-call recipe of docs/inference.md: invert two digits, walk between them."""
    tiny = runtime_models["tiny"]
    zs = [client.post("/invert", files={"file": ("d.png", png(digits(1, seed)[0]))},
                      data={"model": "tiny"}).json()["z"][0] for seed in (2, 3)]
    r = client.post("/interpolate", json={"z_start": zs[0], "z_end": zs[1], "seed_start": None,
                                          "seed_end": None, "steps": 5, "format": "npy",
                                          "model": "tiny"})
    assert r.status_code == 200, r.text
    path = np.load(io.BytesIO(r.content))
    assert np.allclose(path[0], tiny.generate(np.array([zs[0]], np.float32))[0], atol=1e-6)
    assert np.allclose(path[-1], tiny.generate(np.array([zs[1]], np.float32))[0], atol=1e-6)


def test_invert_with_a_model_that_has_no_encoder_is_a_400_naming_model(client) -> None:
    r = client.post("/invert", files={"file": ("x.npy", npy(digits(1)))}, data={"model": "cond"})
    assert r.status_code == 400 and r.json()["field"] == "model"
    assert "cond has no encoder" in r.json()["error"] and "'tiny'" in r.json()["error"]


def test_invert_without_model_uses_the_default_when_it_has_an_encoder(client) -> None:
    r = client.post("/invert", files={"file": ("x.npy", npy(digits(1)))})
    assert r.status_code == 200 and r.json()["model"] == "tiny"


# ---------------------------------------------------------------- /inpaint


def inpaint(client, x: np.ndarray, **data) -> object:
    files = {"file": ("x.npy", npy(x))}
    if "mask" in data:
        files["mask"] = ("mask.npy", data.pop("mask"))
    return client.post("/inpaint", files=files, data={"model": "paint", **data})


def test_inpaint_completes_hidden_pixels_and_keeps_visible_ones_exactly(client,
                                                                         runtime_models) -> None:
    paint, x = runtime_models["paint"], digits(2, seed=5)
    r = inpaint(client, x, family="half", seed="3", k="4", format="npy")
    assert r.status_code == 200, r.text
    assert r.headers["x-seed"] == "3"
    got = np.load(io.BytesIO(r.content))
    assert got.shape == (2, 4, 28, 28) and got.dtype == np.float32
    hide = masks("half", 2, 3, (28, 28), 0.5)
    images = x.astype(np.float32) / 255
    for i in range(2):
        visible = ~hide[i]
        assert np.array_equal(got[i][:, visible], np.broadcast_to(images[i][visible],
                                                                  (4, visible.sum())))
    # the hidden pixels are G's: the seed contract's latents, the image and the mask
    expected = paint.complete(paint.latents(8, 3), np.repeat(images, 4, axis=0),
                              np.repeat(hide, 4, axis=0))
    assert np.allclose(got.reshape(8, 28, 28), expected, atol=1e-6)
    assert got[0, 0][hide[0]].std() > 0 and not np.allclose(got[0, 0], got[0, 1])
    again = np.load(io.BytesIO(inpaint(client, x, family="half", seed="3", k="4",
                                       format="npy").content))
    assert np.array_equal(got, again)


@pytest.mark.parametrize("shape", [(28, 28), (2, 28, 28)])
def test_inpaint_takes_an_explicit_mask_for_all_images_or_one_each(client, shape) -> None:
    x = digits(2, seed=6)
    hide = np.zeros(shape, np.uint8)
    hide[..., 10:20, 5:15] = 1
    r = inpaint(client, x, mask=npy(hide), seed="1", k="2", format="npy")
    assert r.status_code == 200, r.text
    got = np.load(io.BytesIO(r.content))
    visible = ~np.broadcast_to(hide.astype(bool), (2, 28, 28))
    for i in range(2):
        assert np.array_equal(got[i, 1][visible[i]], (x[i].astype(np.float32) / 255)[visible[i]])


def test_inpaint_takes_a_png_mask_white_hidden(client) -> None:
    x, picture = digits(1, seed=7), np.zeros((28, 28), np.uint8)
    picture[:, 14:] = 255
    r = client.post("/inpaint", files={"file": ("x.npy", npy(x)),
                                       "mask": ("mask.png", png(picture))},
                    data={"model": "paint", "k": "1", "seed": "0", "format": "npy"})
    assert r.status_code == 200, r.text
    got = np.load(io.BytesIO(r.content))[0, 0]
    assert np.array_equal(got[:, :14], x[0, :, :14].astype(np.float32) / 255)
    assert not np.array_equal(got[:, 14:], x[0, :, 14:].astype(np.float32) / 255)


def test_inpaint_png_shows_a_row_per_image_original_masked_and_completions(client) -> None:
    r = inpaint(client, digits(3), family="centre", k="5", seed="2")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (2 * (7 * 30 + 2), 2 * (3 * 30 + 2))


def test_inpaint_without_model_uses_the_inpainting_model(client) -> None:
    r = client.post("/inpaint", files={"file": ("x.npy", npy(digits(1)))},
                    data={"family": "pixels", "k": "1", "format": "npy"})
    assert r.status_code == 200, r.text
    assert int(r.headers["x-seed"]) >= 0


@pytest.mark.parametrize("data, mask, field, words", [
    ({"family": "half"}, np.zeros((28, 28), bool), "mask", "exactly one of"),
    ({}, None, "mask", "exactly one of"),
    ({}, np.zeros((28, 28), bool), "mask", "hides no pixel"),
    ({}, np.ones((28, 28), bool), "mask", "hides every pixel"),
    ({}, np.ones((3, 28, 28), bool), "mask", "shape must be (28, 28) or (2, 28, 28)"),
    ({}, np.ones((27, 28), bool), "mask", "shape must be"),
    ({}, np.full((28, 28), 2, np.uint8), "mask", "0 (visible) or 1 (hidden)"),
    ({"family": "stripes"}, None, "family", "family"),
    ({"family": "half", "k": "65"}, None, "k", "64"),
    ({"family": "half", "k": "0"}, None, "k", "1"),
    ({"family": "half", "hidden": "1.0"}, None, "hidden", "0.99"),
    ({"family": "pixels", "hidden": "0"}, None, "hidden", "0.01"),
    ({"family": "half", "k": "64", "file_rows": 17}, None, "k", "at most 1024 completions"),
])
def test_bad_inpaint_requests_are_a_400_naming_the_field(client, data, mask, field,
                                                         words) -> None:
    data = dict(data)
    x = digits(data.pop("file_rows", 2))
    files = {"file": ("x.npy", npy(x))}
    if mask is not None:
        files["mask"] = ("mask.npy", npy(mask))
    r = client.post("/inpaint", files=files, data={"model": "paint", **data})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and words in r.json()["error"], r.json()


def test_a_mask_sent_as_text_is_refused_never_fetched(client) -> None:
    r = client.post("/inpaint", files={"file": ("x.npy", npy(digits(1))),
                                       "mask": (None, "http://127.0.0.1:9/mask.npy")},
                    data={"model": "paint"})
    assert r.status_code == 400 and r.json()["field"] == "mask"
    assert "not a text value" in r.json()["error"]


def test_models_that_cannot_do_a_route_say_which_can(client) -> None:
    r = inpaint(client, digits(1), family="half")
    assert r.status_code == 200
    r = client.post("/inpaint", files={"file": ("x.npy", npy(digits(1)))},
                    data={"model": "tiny", "family": "half"})
    assert r.status_code == 400 and r.json()["field"] == "model"
    assert "tiny has no mask input" in r.json()["error"] and "['paint']" in r.json()["error"]
    for route, body in (("/sample", {"n": 1}), ("/interpolate", {"seed_start": 0, "seed_end": 1}),
                        ("/jobs/submit", {"n": 10})):
        r = client.post(route, json={**body, "model": "paint"})
        assert r.status_code == 400 and "use /inpaint" in r.json()["error"], (route, r.text)
    r = client.post("/score", files={"file": ("x.npy", npy(digits(1)))}, data={"model": "paint"})
    assert r.status_code == 400 and r.json()["field"] == "model"


def test_inpaint_counts_its_completions_in_the_metrics(client) -> None:
    inpaint(client, digits(2), family="quarters", k="3", seed="1")
    text = client.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith(
        'counterfeit_images_generated_total{endpoint="inpaint",model="paint"}')]
    assert lines and float(lines[0].split()[-1]) >= 6


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).random((1, 1, 28, 28), np.float32),
    np.zeros((5, 784), np.uint8), np.zeros((0, 784), np.float32), np.array(3.0, np.float32),
    np.arange(6, dtype=np.float64).reshape(2, 3).T,  # not C-ordered: written as it would be
    np.ones((2, 2), ">f4")], ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_npy_answers_are_the_bytes_np_save_writes(array: np.ndarray) -> None:
    """encode_npy makes each header once; its bytes stay np.save's, twice over (cached)."""
    saved = io.BytesIO()
    np.save(saved, np.ascontiguousarray(array), allow_pickle=False)
    assert encode_npy(array) == saved.getvalue() == encode_npy(array.copy())
