"""Export a torch module to one self-contained ONNX file with a dynamic batch axis."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import onnx
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
