from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training.data.mnist import (
    MNIST_SHA256,
    TRAIN_LABEL_COUNTS,
    DataError,
    download_mnist,
    load_mnist,
    parse_idx,
    read_verified,
    resolve_data_dir,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trips_shape_and_values() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)


@pytest.mark.parametrize("raw", [b"", b"\x01\x00\x08\x01", idx_bytes(np.zeros((2, 2)))[:-1]])
def test_parse_idx_rejects_malformed_files(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_idx(raw)


def test_paper_split(mnist_dir: Path) -> None:
    mnist = load_mnist(mnist_dir)
    assert mnist.train.images.shape == (50_000, 784)
    assert mnist.valid.images.shape == (10_000, 784)
    assert mnist.test.images.shape == (10_000, 784)
    assert mnist.train.images.dtype == np.float32
    assert mnist.train.images.min() == 0.0 and mnist.train.images.max() == 1.0
    # pixels / 255 exactly: every value is a multiple of 1/255
    assert np.allclose(mnist.valid.images * 255, np.round(mnist.valid.images * 255), atol=1e-4)
    # the validation split is training images 50,000-59,999, in file order
    raw = read_verified(mnist_dir, "train-labels-idx1-ubyte")
    np.testing.assert_array_equal(mnist.valid.labels, raw[50_000:])
    assert set(np.unique(mnist.test.labels)) == set(range(10))


def test_the_label_prior_is_the_training_images_digit_counts(mnist_dir: Path) -> None:
    """A conditional model's evaluation draws labels from TRAIN_LABEL_COUNTS."""
    counts = np.bincount(load_mnist(mnist_dir).train.labels, minlength=10)
    assert tuple(int(n) for n in counts) == TRAIN_LABEL_COUNTS and sum(counts) == 50_000


def test_uncompressed_files_are_read_too(mnist_dir: Path, tmp_path: Path) -> None:
    name = "t10k-labels-idx1-ubyte"
    (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    assert read_verified(tmp_path, name).shape == (10_000,)


def test_altered_file_is_refused_with_file_and_hashes(mnist_dir: Path, tmp_path: Path) -> None:
    name = "t10k-labels-idx1-ubyte"
    raw = bytearray(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    raw[100] ^= 1
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError) as err:
        read_verified(tmp_path, name)
    message = str(err.value)
    assert str(tmp_path / f"{name}.gz") in message
    assert MNIST_SHA256[name] in message and "make data" in message


def test_missing_file_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*not found.*make data"):
        load_mnist(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_data_dir_setting_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERFEIT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir() == tmp_path / "env"


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder: the download code never touches the network."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_download_fetches_and_verifies(mnist_dir: Path, mirror: tuple[str, Path],
                                       tmp_path: Path) -> None:
    url, root = mirror
    for name in MNIST_SHA256:
        shutil.copy(mnist_dir / f"{name}.gz", root)
    target = tmp_path / "downloaded"
    written = download_mnist(target, url)
    assert sorted(p.name for p in written) == sorted(f"{n}.gz" for n in MNIST_SHA256)
    assert load_mnist(target).test.images.shape == (10_000, 784)
    assert not list(target.glob("*.part"))


def test_download_refuses_a_tampered_mirror(mnist_dir: Path, mirror: tuple[str, Path],
                                            tmp_path: Path) -> None:
    url, root = mirror
    for name in MNIST_SHA256:
        shutil.copy(mnist_dir / f"{name}.gz", root)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    target = tmp_path / "downloaded"
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz has sha256"):
        download_mnist(target, url)
    assert not (target / "train-images-idx3-ubyte.gz").exists()
    assert not list(target.glob("*.part"))


def test_download_reports_an_unreachable_file(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror  # empty mirror: 404
    with pytest.raises(DataError, match="download of .*failed"):
        download_mnist(tmp_path / "downloaded", url)
