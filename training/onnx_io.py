"""ONNX both ways: export a torch module to one self-contained file with a dynamic batch
axis, and run an exported model with onnxruntime on the CPU, in batches."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

OPSET = 18


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: list[str]) -> Path:
    """Write `module` (in eval mode) to `path`; no `.onnx.data` sidecar; checked by onnx."""
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every pass
        torch.onnx.export(
            module, (example,), str(path), input_names=[input_name],
            output_names=output_names,
            opset_version=OPSET, dynamo=True, external_data=False, optimize=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batched(session: ort.InferenceSession, x: np.ndarray, batch: int = 1000
                ) -> list[np.ndarray]:
    """All outputs of `session` on `x`, concatenated over batches of `batch` rows."""
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
