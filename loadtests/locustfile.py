"""Locust profiles of Counterfeit's real uses. Every response is checked (status and
content), so a wrong answer counts as a failure, not as throughput.

Run through `make loadtest` (starts and stops the service), or by hand:
    locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 [UserClass ...]

Request names carry the images per request (`n=64`), which the summary uses for samples/s.
"""

from __future__ import annotations

import io
import random
import sys
import time
from pathlib import Path

import numpy as np
from locust import HttpUser, between, constant, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # locust loads us by path
from service.contract.card import read_card  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JSON = {"content-type": "application/json"}
# the served model's image shape: every answer is checked against it
SHAPE = read_card(Path(__file__).resolve().parent.parent / "models" / "mnist-mlp").image \
    .card_shape
MODELS = Path(__file__).resolve().parent.parent / "models"
CONDITIONAL = MODELS / "mnist-conditional"
INPAINTING = MODELS / "mnist-inpaint"
HAS_ENCODER = read_card(MODELS / "mnist-mlp").encoder is not None


def _upload_npy(rows: int) -> bytes:
    """`rows` random uint8 images of the served shape, as an .npy upload."""
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng().integers(0, 256, (rows, *SHAPE), dtype=np.uint8))
    return buffer.getvalue()


def _npy(response, expected_shape: tuple[int, ...]) -> None:
    try:
        array = np.load(io.BytesIO(response.content), allow_pickle=False)
    except ValueError as err:
        response.failure(f"not an .npy body: {err}")
        return
    if array.shape != expected_shape or not (0 <= array.min() and array.max() <= 1):
        response.failure(f"got shape {array.shape}, range [{array.min()}, {array.max()}]")


def _post_npy(client, route: str, body: dict, name: str, rows: int) -> None:
    """POST a JSON body that asks for .npy images; a failure unless 200 with `rows` images."""
    with client.post(route, json=body, headers=JSON, name=name, catch_response=True) as r:
        if r.status_code != 200:
            r.failure(f"status {r.status_code}: {r.text[:200]}")
        else:
            _npy(r, (rows, *SHAPE))


def _sample_npy(client, n: int) -> None:
    _post_npy(client, "/sample", {"n": n, "format": "npy", "seed": random.randrange(2**31)},
              f"/sample n={n} npy", n)


if CONDITIONAL.is_dir():  # where the conditional model is served, the mixed profile asks it
    class LabelledSampleUser(HttpUser):
        """Someone asking the conditional model for digits of one class (§7.1): n=16 .npy of a
        random label. Runs when models/mnist-conditional is served (profile `labelled`)."""

        weight = 2
        wait_time = between(0.2, 1)

        @task
        def digits(self) -> None:
            body = {"n": 16, "seed": random.randrange(2**31), "format": "npy",
                    "model": CONDITIONAL.name, "label": random.randrange(10)}
            _post_npy(self.client, "/sample", body, "/sample n=16 npy labelled", 16)


class PersonAskingForAGrid(HttpUser):
    """A person in a browser or notebook: one PNG grid of 16, then looks at it (1-3 s)."""

    weight = 3
    wait_time = between(1, 3)

    @task
    def grid(self) -> None:
        with self.client.post("/sample", json={"n": 16}, headers=JSON, name="/sample n=16 png",
                              catch_response=True) as r:
            if r.status_code != 200 or not r.content.startswith(PNG_MAGIC):
                r.failure(f"status {r.status_code}, not a PNG")


class ProgramFetchingBatches(HttpUser):
    """A program pulling n=64 .npy batches back to back."""

    weight = 2
    wait_time = constant(0)

    @task
    def batch(self) -> None:
        _sample_npy(self.client, 64)


class SingleSampleUser(HttpUser):
    """Many clients asking for one image each (where batching matters)."""

    weight = 4
    wait_time = constant(0)

    @task
    def one(self) -> None:
        _sample_npy(self.client, 1)


class Interpolator(HttpUser):
    """Walks between two seeds, 10 steps, slerp."""

    weight = 1
    wait_time = between(0.5, 1.5)

    @task
    def walk(self) -> None:
        body = {"seed_start": random.randrange(2**31), "seed_end": random.randrange(2**31),
                "steps": 10, "method": "slerp", "format": "npy"}
        _post_npy(self.client, "/interpolate", body, "/interpolate n=10 npy", 10)


class Scorer(HttpUser):
    """Uploads 16 images (an .npy) to be scored by D."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.random.default_rng().uniform(0, 1, (16, *SHAPE)).astype(np.float32))
        self.payload = buffer.getvalue()

    @task
    def score(self) -> None:
        with self.client.post("/score", files={"file": ("x.npy", self.payload)},
                              name="/score n=16 npy", catch_response=True) as r:
            scores = r.json().get("scores", []) if r.status_code == 200 else []
            if len(scores) != 16 or not all(0 <= s <= 1 for s in scores):
                r.failure(f"status {r.status_code}, {len(scores)} scores")


if HAS_ENCODER:  # §7.2: where mnist-mlp has its encoder, the mixed profile inverts too
    class Inverter(HttpUser):
        """Someone finding the latents of 8 of their own digits (/invert, json), to walk
        between them. Profile `invert`."""

        weight = 1
        wait_time = between(0.5, 1.5)

        def on_start(self) -> None:
            self.payload = _upload_npy(8)

        @task
        def invert(self) -> None:
            with self.client.post("/invert", files={"file": ("x.npy", self.payload)},
                                  name="/invert n=8", catch_response=True) as r:
                body = r.json() if r.status_code == 200 else {}
                z, errors = body.get("z", []), body.get("pixel_error", [])
                if len(z) != 8 or len(errors) != 8 or not all(0 <= e <= 1 for e in errors):
                    r.failure(f"status {r.status_code}: {r.text[:200]}")


if INPAINTING.is_dir():  # §7.3: where the inpainting model is served
    class Inpainter(HttpUser):
        """Someone restoring 2 damaged digits, 8 completions each, half hidden (/inpaint
        npy). Profile `inpaint`."""

        weight = 1
        wait_time = between(0.5, 1.5)

        def on_start(self) -> None:
            self.payload = _upload_npy(2)

        @task
        def inpaint(self) -> None:
            data = {"family": random.choice(["half", "quarters", "centre", "pixels"]), "k": "8",
                    "seed": str(random.randrange(2**31)), "format": "npy",
                    "model": INPAINTING.name}
            with self.client.post("/inpaint", files={"file": ("x.npy", self.payload)},
                                  data=data, name="/inpaint n=2 k=8 npy",
                                  catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"status {r.status_code}: {r.text[:200]}")
                else:
                    _npy(r, (2, 8, *SHAPE))


class BatchJobUser(HttpUser):
    """Submits a 5,000-image job, polls it, fetches the .npy; cancels one job in four
    while it runs instead."""

    weight = 1
    wait_time = between(2, 5)

    @task
    def job(self) -> None:
        with self.client.post("/jobs/submit", json={"n": 5000}, headers=JSON,
                              name="/jobs/submit n=5000", catch_response=True) as r:
            if r.status_code != 202 or "job_id" not in r.json():
                r.failure(f"status {r.status_code}")
                return
            job = {"job_id": r.json()["job_id"]}
        if random.random() < 0.25:
            with self.client.post("/jobs/cancel", json=job, headers=JSON, name="/jobs/cancel",
                                  catch_response=True) as r:
                # 409: it finished first, which a short job may
                if r.status_code not in (200, 409):
                    r.failure(f"status {r.status_code}")
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = self.client.post("/jobs/status", json=job, headers=JSON,
                                     name="/jobs/status").json().get("state")
            if state not in ("queued", "running"):
                break
            time.sleep(0.5)
        with self.client.post("/jobs/result", json=job, headers=JSON, name="/jobs/result",
                              catch_response=True) as r:
            try:
                images = np.load(io.BytesIO(r.content))
            except Exception as err:  # any unreadable answer is a failure of the service
                r.failure(f"status {r.status_code}, not an .npy: {err}")
                return
            if images.shape != (5000, *SHAPE) or images.dtype != np.uint8:
                r.failure(f"images {images.shape} {images.dtype}")
