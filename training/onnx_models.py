"""Run exported ONNX models with onnxruntime on the CPU, in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


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
