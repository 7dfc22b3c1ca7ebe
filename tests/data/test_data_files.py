"""Tests of the IDX reader and the Fashion-MNIST loader, on IDX files the tests write and on the real set."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import fedra.data._datasets as datasets_mod
from fedra.data import FASHION_MNIST_ENV, load_fashion_mnist, read_idx
from fedra.errors import DatasetError

CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
         np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}
REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX: magic (0, 0, type, ndim), big-endian dims, big-endian data."""
    header = bytes([0, 0, CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_every_type(tmp_path: Path, dtype: np.dtype, compress: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", array, compress=compress))
    assert got.shape == (3, 4, 5)
    assert got.dtype.newbyteorder("=") == dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    gz_named_plain = write_idx(tmp_path / "labels.gz", array, compress=False)
    plain_named_gz = write_idx(tmp_path / "labels", array, compress=True)
    np.testing.assert_array_equal(read_idx(gz_named_plain), array)
    np.testing.assert_array_equal(read_idx(str(plain_named_gz)), array)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated_names_file_and_sizes(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data[:-100]) if compress else data[:-100])
    with pytest.raises(DatasetError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "expected 3,152 bytes for a uint8 array of shape (4, 28, 28), found 3,052 bytes" in message
    assert "truncated" in message
    assert ("(decompressed)" in message) == compress


def test_read_idx_rejects_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)) + b"\0")
    with pytest.raises(DatasetError, match=r"expected 13 bytes .* found 14 bytes; the file is longer"):
        read_idx(path)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\0", "expected an IDX magic number starting with two zero bytes, got 0x01000801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\0", r"expected an IDX type code in \{0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E\}, got 0x07"),
        (b"\x00\x00\x08\x00", "expected at least one dimension in the IDX header, got 0"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "expected an IDX header of 16 bytes for 3 dimensions, found 8 bytes"),
        (b"\x00\x00", "expected an IDX header of at least 4 bytes, found 2 bytes"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"\0" * 5, r"expected 18 bytes for a uint8 array of shape \(2, 3\), found 17 bytes"),
    ],
)
def test_read_idx_rejects_malformed_headers(tmp_path: Path, payload: bytes, fragment: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match=fragment):
        read_idx(path)


def test_read_idx_rejects_corrupt_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, dtype=np.uint8)))[:-12])
    with pytest.raises(DatasetError, match=r"bad\.gz: expected a valid gzip stream, got a corrupt or truncated one"):
        read_idx(path)
    with pytest.raises(DatasetError, match=r"missing: cannot read IDX file"):
        read_idx(tmp_path / "missing")


# --- Fashion-MNIST -----------------------------------------------------------------------------------


def write_fake_fashion(directory: Path, *, n_train: int = 6, n_test: int = 4, compress: bool = True,
                       image_shape: tuple[int, int] = (28, 28)) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        images[0, 0, 0] = 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_explicit_path(tmp_path: Path, compress: bool) -> None:
    write_fake_fashion(tmp_path, compress=compress)
    train, test = load_fashion_mnist(tmp_path)
    assert train.x.shape == (6, 1, 28, 28) and test.x.shape == (4, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert train.x.max() == 1.0 and train.x.min() >= 0.0
    np.testing.assert_array_equal(train.y, np.arange(6) % 10)
    assert train.num_classes == 10
    assert train.name == "fashion_mnist/train" and test.name == "fashion_mnist/test"


def test_fashion_mnist_env_var_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_fashion(tmp_path / "env", n_train=3)
    write_fake_fashion(tmp_path / "default", n_train=5)
    monkeypatch.setattr(datasets_mod, "FASHION_MNIST_DIRS", (tmp_path / "default",))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "env"))
    assert len(load_fashion_mnist()[0]) == 3
    monkeypatch.delenv(FASHION_MNIST_ENV)
    assert len(load_fashion_mnist()[0]) == 5
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "empty"))  # incomplete: fall through
    assert len(load_fashion_mnist()[0]) == 5


def test_fashion_mnist_missing_error_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_mod, "FASHION_MNIST_DIRS", (tmp_path / "nowhere",))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    write_idx(tmp_path / "env" / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8),
              compress=True)  # only one of four files
    with pytest.raises(DatasetError) as info:
        load_fashion_mnist()
    message = str(info.value)
    assert message.startswith(f"Fashion-MNIST not found in {tmp_path / 'env'}, {tmp_path / 'nowhere'}")
    assert "apt-get install dataset-fashion-mnist" in message
    assert FASHION_MNIST_ENV in message
    assert "data.path" in message
    assert info.value.exit_code == 66


def test_fashion_mnist_explicit_path_is_the_only_place_searched(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"^Fashion-MNIST not found in {tmp_path} \("):
        load_fashion_mnist(str(tmp_path))


def test_fashion_mnist_rejects_wrong_image_size_and_mismatched_labels(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path / "small", image_shape=(8, 8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: expected uint8 images of shape \(n, 28, 28\), got uint8 of shape \(6, 8, 8\)"):
        load_fashion_mnist(tmp_path / "small")
    write_fake_fashion(tmp_path / "mismatch")
    write_idx(tmp_path / "mismatch" / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), compress=True)
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: expected 4 uint8 labels"):
        load_fashion_mnist(tmp_path / "mismatch")
    write_fake_fashion(tmp_path / "labels")
    write_idx(tmp_path / "labels" / "t10k-labels-idx1-ubyte.gz", np.full(4, 10, np.uint8), compress=True)
    with pytest.raises(DatasetError, match=r"expected labels in 0\.\.9, got a label 10"):
        load_fashion_mnist(tmp_path / "labels")


@pytest.mark.skipif(not (REAL_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist() -> None:
    train, test = load_fashion_mnist(REAL_DIR)
    assert train.x.shape == (60_000, 1, 28, 28)
    assert test.x.shape == (10_000, 1, 28, 28)
    assert train.x.dtype == np.float32
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    np.testing.assert_array_equal(train.class_counts(), np.full(10, 6000))
    np.testing.assert_array_equal(test.class_counts(), np.full(10, 1000))
    assert int(train.y.min()) == 0 and int(train.y.max()) == 9
    # mean pixel of the training set, a well-known statistic (0.2860)
    assert abs(float(train.x.mean()) - 0.2860) < 1e-3
