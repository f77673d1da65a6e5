"""The seed contract on the shipped model: /sample with a seed returns exactly what
`generator.onnx` gives, run anywhere, on z = default_rng(seed).uniform(low, high, (n, dim))."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "mnist-mlp"


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (16, 123), (300, 2**40)])
def test_a_seeded_sample_is_the_generator_on_the_formulas_latents(client, n: int,
                                                                  seed: int) -> None:
    r = client.post("/sample", json={"n": n, "seed": seed, "format": "npy",
                                     "model": "mnist-mlp"})
    assert r.status_code == 200 and r.headers["x-seed"] == str(seed)
    served = np.load(io.BytesIO(r.content), allow_pickle=False)
    # written out here, not imported: this is what a user anywhere would compute
    z = np.random.default_rng(seed).uniform(-math.sqrt(3), math.sqrt(3), (n, 100))
    session = ort.InferenceSession(str(SHIPPED / "generator.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = session.run(None, {"z": z.astype(np.float32)})[0].reshape(n, 28, 28)
    assert served.dtype == np.float32 and served.shape == (n, 28, 28)
    np.testing.assert_allclose(served, np.clip(x, 0, 1), rtol=0, atol=1e-5)
