"""A peer: LitServe (Lightning AI's model server) running the shipped generator.onnx with
onnxruntime, with Counterfeit's seed contract and encoders, so that `make bench` compares
serving machinery only. With --batch N, LitServe's own batching merges up to N requests
(waiting at most 2 ms, as Counterfeit's batcher).

    python loadtests/baselines/litserve_ort.py --port 8000 [--batch 32]

LitServe runs the model in a worker process behind a FastAPI front end; POST /sample takes
Counterfeit's {"n", "seed", "format"} and answers the same npy or PNG bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import litserve as ls
import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from loadtests.baselines.sample_request import parse  # noqa: E402
from service.contract.card import read_card  # noqa: E402
from service.images import encode_npy, encode_png_grid  # noqa: E402
from service.runtime import make_session  # noqa: E402

MODEL = Path(os.environ.get("COUNTERFEIT_MODELS_DIR",
                            Path(__file__).resolve().parents[2] / "models")) / "mnist-mlp"
Request = tuple[np.ndarray, int, str]  # latents, seed, format


class GeneratorAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.card = read_card(MODEL)
        self.session = make_session(MODEL / "generator.onnx", ["CPUExecutionProvider"],
                                    int(os.environ.get("BASELINE_THREADS", "1")))

    def decode_request(self, request: dict) -> Request:
        try:
            n, seed, fmt, _ = parse(request)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return self.card.latent.sample(n, seed), seed, fmt

    def batch(self, requests: list[Request]) -> list[Request]:
        return requests  # requests of different n: concatenated in predict

    def predict(self, requests: Request | list[Request]) -> list | tuple:
        batched = isinstance(requests, list)
        items = requests if batched else [requests]
        x = self.session.run(None, {"z": np.concatenate([z for z, _, _ in items])})[0]
        np.clip(x, 0.0, 1.0, out=x)
        out, start = [], 0
        for z, seed, fmt in items:
            out.append((x[start:start + len(z)].reshape(len(z), *self.card.image.card_shape),
                        seed, fmt))
            start += len(z)
        return out if batched else out[0]

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, output: tuple) -> Response:
        images, seed, fmt = output
        if fmt == "npy":
            return Response(encode_npy(images), media_type="application/octet-stream",
                            headers={"X-Seed": str(seed)})
        return Response(encode_png_grid(images, self.card.image), media_type="image/png",
                        headers={"X-Seed": str(seed)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=1, help="LitServe's max_batch_size")
    args = parser.parse_args()
    api = GeneratorAPI(max_batch_size=args.batch, batch_timeout=0.002 if args.batch > 1
                       else 0.0, api_path="/sample")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1,
                          healthcheck_path="/readyz")
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1,
               generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
