"""What the service's answers cost to encode: a PNG grid at each zlib level, and a .npy of
float32 or uint8, on the shipped model's samples (a ratio against Pillow's default level 6
is what to read; absolute times depend on the machine and its load).

    .venv/bin/python loadtests/encoding.py [--n 16] [--repeats 300]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.images import encode_npy, encode_png_grid, to_uint8  # noqa: E402
from service.runtime import load_model  # noqa: E402

MODEL = Path(__file__).resolve().parent.parent / "models" / "mnist-mlp"


def per_call_ms(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    model = load_model(MODEL, ["CPUExecutionProvider"], threads=1)
    images = model.generate(model.latents(args.n, 0))
    grid = Image.open(io.BytesIO(encode_png_grid(images, model.card.image)))
    grid.load()

    def png(level: int) -> bytes:
        out = io.BytesIO()
        grid.save(out, format="PNG", compress_level=level)
        return out.getvalue()

    rows = {f"PNG, zlib level {level}": lambda level=level: png(level) for level in (0, 1, 6, 9)}
    rows |= {"npy float32": lambda: encode_npy(images),
             "npy uint8": lambda: encode_npy(to_uint8(images))}
    for fn in rows.values():  # warm-up
        fn()
    ms = {name: per_call_ms(fn, args.repeats) for name, fn in rows.items()}
    print(f"| answer (n = {args.n}) | ms per encode | bytes | time vs PNG level 6 |")
    print("| --- | --- | --- | --- |")
    for name, fn in rows.items():
        print(f"| {name} | {ms[name]:.3f} | {len(fn()):,} | "
              f"{ms[name] / ms['PNG, zlib level 6']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
