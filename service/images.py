"""Encoding images for responses and decoding uploads for scoring, validated before any
large allocation. Every shape comes from the model card's ImageSpec: grey (H, W) or
channels-first (C, H, W) images. numpy and pillow only."""

from __future__ import annotations

import ast
import functools
import io
import math

import numpy as np
from PIL import Image

from service.contract.card import ImageSpec
from service.errors import RequestError

NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SCORE_IMAGES = 1024
# zlib level of PNG answers: level 1 encodes a 4 x 4 grid of the shipped model's digits in
# about half the time of Pillow's default 6, 26% larger; level 0 is 10x larger
# (loadtests/encoding.py, docs/service.md)
PNG_COMPRESS_LEVEL = 1


def encode_npy(array: np.ndarray) -> bytes:
    """The bytes np.save writes for `array`, with the header made once per dtype and shape
    (writing it was 4% of a worker's time at n = 1) and one copy of the data."""
    array = np.ascontiguousarray(array)
    return b"".join((_npy_prefix(np.lib.format.dtype_to_descr(array.dtype), array.shape),
                     array.reshape(-1).view(np.uint8)))


@functools.lru_cache(maxsize=512)  # bounded: shapes are n (<= MAX_N) x a model's image
def _npy_prefix(descr: str, shape: tuple[int, ...]) -> bytes:
    """The .npy magic and header (format 1.0) of a C-ordered array."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 pixels, rounded to nearest."""
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def encode_png_grid(images: np.ndarray, spec: ImageSpec, cols: int | None = None,
                    pad: int = 2, scale: int = 2) -> bytes:
    """n images of `spec` (floats in [0, 1]) -> one PNG grid (grey or RGB), white gaps,
    `scale`x enlarged."""
    c, h, w = spec.shape
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    # (n, h, w, c): the layout pillow wants
    pixels = to_uint8(images).reshape(n, c, h, w).transpose(0, 2, 3, 1)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(pixels):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):
             pad + col * (w + pad) + w] = image
    picture = Image.fromarray(grid[:, :, 0], "L") if c == 1 else Image.fromarray(grid, "RGB")
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def _npy_header(raw: bytes, field: str = "file") -> tuple[dict, int]:
    """The header dict of a .npy file and where its data starts, without numpy's loader
    (which would allocate, or unpickle, before we can look)."""
    if not raw.startswith(NPY_MAGIC) or len(raw) < 10:
        raise RequestError(field, "not a .npy file (bad magic bytes)")
    major = raw[6]
    if major == 1:
        length, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise RequestError(field, f"unsupported .npy version {major}")
    if len(raw) < start + length or length > 4096:
        raise RequestError(field, ".npy header truncated or too long")
    try:
        header = ast.literal_eval(raw[start:start + length].decode("latin1"))
    except (ValueError, SyntaxError) as err:
        raise RequestError(field, ".npy header is not a valid dict") from err
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise RequestError(field, ".npy header must have descr, fortran_order and shape")
    return header, start + length


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(n, " + ", ".join(map(str, shape)) + ")"


def decode_npy(raw: bytes, spec: ImageSpec, field: str = "file") -> np.ndarray:
    """(n, *image.shape), (n, C, H, W) or (n, C*H*W), float in [0, 1] or uint8, at most
    MAX_SCORE_IMAGES images -> (n, *image.shape) float32."""
    header, offset = _npy_header(raw, field)
    try:
        dtype = np.dtype(header["descr"])
    except (TypeError, ValueError) as err:
        raise RequestError(field, f"unknown .npy dtype {header['descr']!r}") from err
    if dtype.hasobject or dtype.kind not in "fu" or (dtype.kind == "u" and dtype != np.uint8):
        raise RequestError(field, f"dtype must be float16/32/64 or uint8, got {dtype}")
    shape = header["shape"]
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise RequestError(field, "shape must be a tuple of non-negative ints")
    accepted = {spec.card_shape, spec.shape, (spec.pixels,)}
    if len(shape) < 2 or shape[1:] not in accepted:
        raise RequestError(field, f"shape must be {_shape_text(spec.card_shape)} or "
                           f"{_shape_text((spec.pixels,))}, got {shape}")
    if not 1 <= shape[0] <= MAX_SCORE_IMAGES:
        raise RequestError(field, f"between 1 and {MAX_SCORE_IMAGES} images, got {shape[0]}")
    if header["fortran_order"]:
        raise RequestError(field, "fortran_order arrays are not accepted")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        raise RequestError(field, f".npy data has {len(raw) - offset} bytes, shape {shape} "
                           f"of {dtype} needs {expected}")
    array = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape[0], *spec.card_shape)
    if dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise RequestError(field, "values must be finite (no NaN or Inf)")
    if array.min() < 0.0 or array.max() > 1.0:
        raise RequestError(field, "float values must lie in [0, 1]")
    return array


def decode_png(raw: bytes, spec: ImageSpec, field: str = "file") -> np.ndarray:
    """One PNG of the image's size -> (1, *image.shape). A grey model takes grey 1/8/16-bit
    PNGs (colour ones converted to grey); an RGB model converts any PNG to RGB."""
    channels, height, width = spec.shape
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            if picture.format != "PNG":
                raise RequestError(field, f"expected a PNG, got {picture.format}")
            # checked from the header, before any pixel is decoded (decompression bombs)
            if picture.size != (width, height):
                raise RequestError(field, f"PNG must be {width}x{height}, got "
                                   f"{picture.size[0]}x{picture.size[1]}")
            if channels == 3:
                array = np.asarray(picture.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) \
                    / 255.0
            elif picture.mode in ("I", "I;16", "I;16B"):  # 16-bit grey: convert("L") clips
                array = np.asarray(picture, dtype=np.float64) / 65535.0
            else:
                array = np.asarray(picture.convert("L"), dtype=np.float64) / 255.0
    except RequestError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(field, f"not a readable PNG ({err})") from err
    return array.astype(np.float32).reshape(1, *spec.card_shape)


def decode_upload(raw: bytes, spec: ImageSpec, field: str = "file") -> np.ndarray:
    """An uploaded .npy or PNG -> (n, *image.shape) float32 in [0, 1]."""
    if not raw:
        raise RequestError(field, "the upload is empty")
    if raw.startswith(NPY_MAGIC):
        return decode_npy(raw, spec, field)
    if raw.startswith(PNG_MAGIC):
        return decode_png(raw, spec, field)
    raise RequestError(field, "upload a .npy array or a PNG image")


def decode_mask(raw: bytes, size: tuple[int, int], n: int, field: str = "mask") -> np.ndarray:
    """An uploaded inpainting mask -> (n, H, W) bool, True where a pixel is hidden: a .npy
    of (H, W) (one mask for every image) or (n, H, W), of bools or the numbers 0 and 1; or
    a PNG of the image's size (one mask for every image), white (>= 128) hidden."""
    if not raw:
        raise RequestError(field, "the upload is empty")
    height, width = size
    if raw.startswith(PNG_MAGIC):
        grey = decode_png(raw, ImageSpec.of((1, height, width)), field)
        return np.broadcast_to(grey.reshape(1, height, width) >= 0.5, (n, height, width))
    if not raw.startswith(NPY_MAGIC):
        raise RequestError(field, "upload a .npy array or a PNG image")
    header, offset = _npy_header(raw, field)
    try:
        dtype = np.dtype(header["descr"])
    except (TypeError, ValueError) as err:
        raise RequestError(field, f"unknown .npy dtype {header['descr']!r}") from err
    if dtype.hasobject or dtype.kind not in "buif":
        raise RequestError(field, f"dtype must be bool or numeric, got {dtype}")
    shape = header["shape"]
    if shape not in ((height, width), (n, height, width)) or header["fortran_order"]:
        raise RequestError(field, f"shape must be ({height}, {width}) or ({n}, {height}, "
                           f"{width}) (one mask for all images, or one per image), got {shape}")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        raise RequestError(field, f".npy data has {len(raw) - offset} bytes, shape {shape} "
                           f"of {dtype} needs {expected}")
    values = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)
    if dtype.kind != "b" and not np.isin(values, (0, 1)).all():
        raise RequestError(field, "values must be 0 (visible) or 1 (hidden)")
    return np.broadcast_to(values.astype(bool), (n, height, width))
