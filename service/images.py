"""Encoding images for responses and decoding uploads for scoring, validated before any
large allocation. numpy and pillow only."""

from __future__ import annotations

import ast
import io
import math

import numpy as np
from PIL import Image

from service.request_errors import RequestError

NPY_MAGIC = b"\x93NUMPY"
MAX_SCORE_IMAGES = 1024
PNG_MAX_SIDE = 28  # a score upload is one 28 x 28 digit


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_png_grid(images: np.ndarray, cols: int | None = None, pad: int = 2,
                    scale: int = 2) -> bytes:
    """(n, 28, 28) floats in [0, 1] -> one PNG grid, white gaps, `scale`x enlarged."""
    n, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, np.uint8)
    pixels = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):
             pad + c * (w + pad) + w] = image
    picture = Image.fromarray(grid, "L")
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def _npy_header(raw: bytes) -> tuple[dict, int]:
    """The header dict of a .npy file and where its data starts, without numpy's loader
    (which would allocate, or unpickle, before we can look)."""
    if not raw.startswith(NPY_MAGIC) or len(raw) < 10:
        raise RequestError("file", "not a .npy file (bad magic bytes)")
    major = raw[6]
    if major == 1:
        length, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise RequestError("file", f"unsupported .npy version {major}")
    if len(raw) < start + length or length > 4096:
        raise RequestError("file", ".npy header truncated or too long")
    try:
        header = ast.literal_eval(raw[start:start + length].decode("latin1"))
    except (ValueError, SyntaxError) as err:
        raise RequestError("file", ".npy header is not a valid dict") from err
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise RequestError("file", ".npy header must have descr, fortran_order and shape")
    return header, start + length


def decode_npy(raw: bytes) -> np.ndarray:
    """(n, 28, 28) or (n, 784), float in [0, 1] or uint8, at most MAX_SCORE_IMAGES images."""
    header, offset = _npy_header(raw)
    try:
        dtype = np.dtype(header["descr"])
    except (TypeError, ValueError) as err:
        raise RequestError("file", f"unknown .npy dtype {header['descr']!r}") from err
    if dtype.hasobject or dtype.kind not in "fu" or (dtype.kind == "u" and dtype != np.uint8):
        raise RequestError("file", f"dtype must be float16/32/64 or uint8, got {dtype}")
    shape = header["shape"]
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise RequestError("file", "shape must be a tuple of non-negative ints")
    if not (len(shape) == 3 and shape[1:] == (28, 28)) and not (len(shape) == 2
                                                                and shape[1] == 784):
        raise RequestError("file", f"shape must be (n, 28, 28) or (n, 784), got {shape}")
    if not 1 <= shape[0] <= MAX_SCORE_IMAGES:
        raise RequestError("file", f"between 1 and {MAX_SCORE_IMAGES} images, got {shape[0]}")
    if header["fortran_order"]:
        raise RequestError("file", "fortran_order arrays are not accepted")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        raise RequestError("file", f".npy data has {len(raw) - offset} bytes, shape {shape} "
                           f"of {dtype} needs {expected}")
    array = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape[0], 28, 28)
    if dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise RequestError("file", "values must be finite (no NaN or Inf)")
    if array.min() < 0.0 or array.max() > 1.0:
        raise RequestError("file", "float values must lie in [0, 1]")
    return array


def decode_png(raw: bytes) -> np.ndarray:
    """One 28 x 28 PNG (grey 1/8/16-bit, or RGB/RGBA/P converted to grey) -> (1, 28, 28)."""
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            if picture.format != "PNG":
                raise RequestError("file", f"expected a PNG, got {picture.format}")
            # checked from the header, before any pixel is decoded (decompression bombs)
            if picture.size != (PNG_MAX_SIDE, PNG_MAX_SIDE):
                raise RequestError("file", f"PNG must be 28x28, got {picture.size[0]}x"
                                   f"{picture.size[1]}")
            if picture.mode in ("I", "I;16", "I;16B"):  # 16-bit grey: convert("L") would clip
                array = np.asarray(picture, dtype=np.float64) / 65535.0
            else:
                array = np.asarray(picture.convert("L"), dtype=np.float64) / 255.0
    except RequestError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError("file", f"not a readable PNG ({err})") from err
    return array.astype(np.float32).reshape(1, 28, 28)


def decode_upload(raw: bytes) -> np.ndarray:
    if not raw:
        raise RequestError("file", "the upload is empty")
    if raw.startswith(NPY_MAGIC):
        return decode_npy(raw)
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return decode_png(raw)
    raise RequestError("file", "upload a .npy array or a PNG image")
