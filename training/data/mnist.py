"""MNIST from the official IDX files, hash-checked, split as the 2014 paper split it.

The folder comes from `--data-dir`, else `COUNTERFEIT_DATA_DIR`, else `../shared/data/mnist`
beside the checkout, else `data/mnist` in it (where `make data` downloads to).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from training.paths import REPO_ROOT

DEFAULT_DIRS = (REPO_ROOT.parent / "shared" / "data" / "mnist", REPO_ROOT / "data" / "mnist")
# yann.lecun.com refuses most downloads now; this is the mirror torchvision uses.
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# Published sha256 of each *uncompressed* file.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

IMAGE_SHAPE = (1, 28, 28)  # channels, height, width: what G draws and D reads
TRAIN_STOP = 50_000  # paper split: train 0-49,999, validation 50,000-59,999, test = t10k
# Images of each digit 0-9 among training images 0-49,999 (tests/training/test_data.py checks
# them against the files): the label prior p(c) a conditional model's labels are drawn from
# when it is evaluated on the marginal p(x) (docs/conditional.md).
TRAIN_LABEL_COUNTS = (4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(RuntimeError):
    """MNIST is missing or not the official files."""


def how_to_get(data_dir: Path) -> str:
    return (
        f"Get the four official MNIST files into {data_dir} with `make data` "
        f"(or `python -m training data --data-dir {data_dir}`), which downloads "
        f"{', '.join(name + '.gz' for name in MNIST_SHA256)} from {DEFAULT_MIRROR} "
        "and checks their sha256; or point COUNTERFEIT_DATA_DIR / --data-dir at a folder "
        "that holds them."
    )


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder to read MNIST from: the argument, the env var, then the defaults."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get("COUNTERFEIT_DATA_DIR"):
        return Path(os.environ["COUNTERFEIT_DATA_DIR"])
    for candidate in DEFAULT_DIRS:
        if candidate.is_dir():
            return candidate
    return DEFAULT_DIRS[-1]


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode one IDX file (already decompressed) into an array of its declared shape."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError("not an IDX file: bad magic number")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError("IDX header truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"IDX body has {len(raw) - header} bytes, shape {shape} needs "
                         f"{expected - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file {name}[.gz] not found in {data_dir}. {how_to_get(data_dir)}")


def read_verified(data_dir: Path, name: str) -> np.ndarray:
    """Read one of the four files (gzip or not), refusing it unless its sha256 is official."""
    path = _find(data_dir, name)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read {path}: {err}. {how_to_get(data_dir)}") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_SHA256[name]:
        raise DataError(
            f"{path} is not the official {name}: sha256 of its uncompressed content is "
            f"{digest}, expected {MNIST_SHA256[name]}. {how_to_get(data_dir)}"
        )
    return parse_idx(raw)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 784) float32 in [0, 1]: rows of IMAGE_SHAPE
    labels: np.ndarray  # (n,) int64


@dataclass(frozen=True)
class MNIST:
    train: Split
    valid: Split
    test: Split


def load_mnist(data_dir: str | Path | None = None) -> MNIST:
    """The paper's split, pixels / 255 as float32 rows of 784."""
    folder = resolve_data_dir(data_dir)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist. {how_to_get(folder)}")
    train_x = read_verified(folder, "train-images-idx3-ubyte")
    train_y = read_verified(folder, "train-labels-idx1-ubyte")
    test_x = read_verified(folder, "t10k-images-idx3-ubyte")
    test_y = read_verified(folder, "t10k-labels-idx1-ubyte")

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64))

    return MNIST(
        train=split(train_x[:TRAIN_STOP], train_y[:TRAIN_STOP]),
        valid=split(train_x[TRAIN_STOP:], train_y[TRAIN_STOP:]),
        test=split(test_x, test_y),
    )


def download_mnist(data_dir: str | Path, base_url: str = DEFAULT_MIRROR) -> list[Path]:
    """Fetch the four `.gz` files into `data_dir`, keeping only those whose hash is official.

    A file already there with the right hash is not fetched again.
    """
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    written = []
    for name, expected in MNIST_SHA256.items():
        target = folder / f"{name}.gz"
        if target.is_file() and _gz_sha256(target) == expected:
            written.append(target)
            continue
        url = base + target.name
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, tmp)
            except OSError as err:
                Path(tmp.name).unlink(missing_ok=True)
                raise DataError(f"download of {url} failed: {err}") from err
        digest = _gz_sha256(Path(tmp.name))
        if digest != expected:
            Path(tmp.name).unlink(missing_ok=True)
            raise DataError(f"{url} has sha256 {digest} once uncompressed, expected {expected}; "
                            "nothing was kept")
        os.replace(tmp.name, target)
        written.append(target)
    return written


def _gz_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
