"""ONNX both ways: export a torch module (one or several inputs) to one self-contained file
with a dynamic batch axis, and run an exported model with onnxruntime on the CPU, in
batches."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

OPSET = 18


def export_onnx(module: torch.nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...],
                path: Path, input_names: str | Sequence[str],
                output_names: list[str]) -> Path:
    """Write `module` (in eval mode) to `path`; no `.onnx.data` sidecar; checked by onnx.

    `example` is one input tensor or a tuple of them (a conditional G reads z and c), named
    by `input_names` in that order; all share one symbolic batch axis, "batch"."""
    examples = example if isinstance(example, tuple) else (example,)
    names = [input_names] if isinstance(input_names, str) else list(input_names)
    if len(names) != len(examples):
        raise ValueError(f"{len(examples)} example inputs but {len(names)} names: {names}")
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the
        # exporter narrates every pass, and says so when inputs share the batch axis
        warnings.filterwarnings("ignore", ".*The axis name: batch will not be used")
        torch.onnx.export(
            module, examples, str(path), input_names=names, output_names=output_names,
            opset_version=OPSET, dynamo=True, external_data=False, optimize=True,
            dynamic_shapes=tuple({0: batch} for _ in examples),
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batched(session: ort.InferenceSession, x: np.ndarray, batch: int = 1000,
                extra: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """All outputs of `session` on `x` (its first input), concatenated over batches of
    `batch` rows; `extra` feeds further inputs by name (a conditional model's labels c),
    one row per row of `x`."""
    name = session.get_inputs()[0].name
    extra = extra or {}
    for key, value in extra.items():
        if len(value) != len(x):
            raise ValueError(f"input {key!r} has {len(value)} rows, {name!r} has {len(x)}")
    parts = [session.run(None, {name: x[i:i + batch],
                                **{k: v[i:i + batch] for k, v in extra.items()}})
             for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def initializers(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The weights of an exported module, named as its state_dict names them: an exported
    wrapper's parameters are `<prefix><name>` (the image generator's are `g.hidden.0.weight`
    ...). Loading a shipped G this way gives exactly the weights the service runs, whatever
    window was averaged to make them."""
    model = onnx.load(str(path))
    return {t.name[len(prefix):]: torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
            for t in model.graph.initializer if t.name.startswith(prefix)}
