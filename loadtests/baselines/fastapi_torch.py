"""The peer: what a user would otherwise deploy. A plain FastAPI app running the same
generator in PyTorch eager mode, with the same /sample contract for n and npy output
(TorchServe was not used: it is not installable from these machines' registries without
its Java frontend's own downloads). Run: uvicorn loadtests.baselines.fastapi_torch:app

The generator is rebuilt from the shipped ONNX model's weights, so both servers compute
the same function.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from fastapi import FastAPI
from fastapi.responses import Response
from onnx import numpy_helper
from pydantic import BaseModel, Field

from service.contract.card import random_seed, read_card

MODEL = Path(os.environ.get("COUNTERFEIT_MODELS_DIR",
                            Path(__file__).resolve().parents[2] / "models")) / "mnist-mlp"
torch.set_num_threads(int(os.environ.get("BASELINE_THREADS", "0")) or torch.get_num_threads())


def generator_from_onnx(path: Path) -> torch.nn.Sequential:
    """The MLP in generator.onnx (Gemm layers exported from nn.Linear, so each weight is in
    torch's (out, in) layout) as torch layers: ReLU between them, sigmoid at the end."""
    floats = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT]
    pairs = list(zip(floats[0::2], floats[1::2], strict=True))
    layers: list[torch.nn.Module] = []
    for i, (weight, bias) in enumerate(pairs):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(weight))
            linear.bias.copy_(torch.tensor(bias))
        layers += [linear, torch.nn.ReLU() if i < len(pairs) - 1 else torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers).eval()


G = generator_from_onnx(MODEL / "generator.onnx")
CARD = read_card(MODEL)  # the seed contract: a seed gives the service's own z
app = FastAPI()


class SampleRequest(BaseModel):
    n: int = Field(16, ge=1, le=1024)
    seed: int | None = Field(None, ge=0)
    format: str = "npy"


@app.post("/sample")
def sample(request: SampleRequest) -> Response:
    seed = random_seed() if request.seed is None else request.seed
    z = CARD.latent.sample(request.n, seed)
    with torch.no_grad():
        x = G(torch.from_numpy(z)).numpy().reshape(request.n, *CARD.image.card_shape)
    buffer = io.BytesIO()
    np.save(buffer, x)
    return Response(buffer.getvalue(), media_type="application/octet-stream",
                    headers={"X-Seed": str(seed)})


@app.get("/readyz")
def readyz() -> dict:
    return {"ok": True}
