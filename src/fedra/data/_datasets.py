"""Loaders for the bundled image datasets: scikit-learn's digits and Fashion-MNIST. Nothing is downloaded.

- :func:`load_digits` reads the 1,797 8x8 digits that ship inside scikit-learn (Alpaydin & Kaynak 1998,
  UCI "Optical Recognition of Handwritten Digits") straight from the package's data file, so importing
  and loading it does not import scikit-learn itself (about a second of start-up).
- :func:`load_fashion_mnist` reads Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) from
  local IDX files, as installed by the Debian package ``dataset-fashion-mnist``.

Each loader returns a ``(train, test)`` pair of :class:`~fedra.data.Dataset`.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fedra.data._dataset import Dataset
from fedra.data._idx import read_idx
from fedra.errors import ConfigError, DatasetError

__all__ = [
    "DIGITS_SPLIT_SEED",
    "FASHION_MNIST_DIRS",
    "FASHION_MNIST_ENV",
    "load_digits",
    "load_fashion_mnist",
    "stratified_split",
]

#: Seed of the digits train/test split; fixed so the test set is the same for every experiment seed.
DIGITS_SPLIT_SEED: Final = 20240611
#: Environment variable naming a directory that holds the Fashion-MNIST IDX files.
FASHION_MNIST_ENV: Final = "FEDRA_FASHION_MNIST_DIR"
#: Directories searched for Fashion-MNIST after ``$FEDRA_FASHION_MNIST_DIR``.
FASHION_MNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

_FASHION_FILES: Final = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_DIGITS_FILE: Final = Path("datasets", "data", "digits.csv.gz")


def stratified_split(
    labels: npt.ArrayLike, *, test_fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Split sample indices into train and test, keeping each class's share in both.

    Every class contributes ``round(test_fraction * n_c)`` of its ``n_c`` samples, chosen at random, to
    the test split.

    Parameters
    ----------
    labels : array_like of int
        Class label of each sample, 1-D.
    test_fraction : float
        Fraction of each class held out, ``0 < test_fraction < 1``.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Sorted int64 train and test indices; disjoint, together every index once.

    Raises
    ------
    ConfigError
        If ``test_fraction`` is out of range or either split would be empty.
    """
    _check_fraction(test_fraction)
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"labels: expected a non-empty 1-D integer array, got a {y.ndim}-D {y.dtype} array"
        )
    test_parts = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        test_parts.append(members[: round(test_fraction * len(members))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if train.size == 0 or test.size == 0:
        raise ConfigError(
            f"test_fraction: expected a value that leaves both splits non-empty for {len(y)} "
            f"samples, got {test_fraction}"
        )
    return train.astype(np.int64), test.astype(np.int64)


def load_digits(
    *, test_fraction: float = 0.2, split_seed: int = DIGITS_SPLIT_SEED
) -> tuple[Dataset, Dataset]:
    """Load scikit-learn's bundled handwritten digits, split into train and test.

    Parameters
    ----------
    test_fraction : float, default 0.2
        Fraction of each class held out for the test set, ``0 < test_fraction < 1``.
    split_seed : int, default DIGITS_SPLIT_SEED
        Seed of the stratified split. Fixed by default so the test set does not change with the
        experiment's seed.

    Returns
    -------
    (Dataset, Dataset)
        Train and test sets: ``x`` float32 of shape ``(n, 64)`` in ``[0, 1]`` (pixel counts 0..16 divided
        by 16, 8x8 images flattened row-major), ``y`` int64 in ``0..9``; 1,797 samples in all.

    Raises
    ------
    DatasetError
        If scikit-learn is not installed (the data ships with it).
    ConfigError
        If ``test_fraction`` is out of range.
    """
    _check_fraction(test_fraction)
    table = _read_digits_file()
    if table is None:
        table = _digits_from_sklearn()
    x = (table[:, :64] / np.float32(16)).astype(np.float32)
    full = Dataset(x=x, y=table[:, 64].astype(np.int64), num_classes=10, name="digits")
    train, test = stratified_split(
        full.y, test_fraction=test_fraction, rng=np.random.default_rng(split_seed)
    )
    return full.subset(train, name="digits/train"), full.subset(test, name="digits/test")


def load_fashion_mnist(path: str | Path | None = None) -> tuple[Dataset, Dataset]:
    """Load Fashion-MNIST from local IDX files.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or with a ``.gz`` suffix.
        When omitted, ``$FEDRA_FASHION_MNIST_DIR`` is tried, then ``/usr/share/datasets/fashion-mnist``
        (where ``apt-get install dataset-fashion-mnist`` puts them).

    Returns
    -------
    (Dataset, Dataset)
        The official train (60,000) and test (10,000) sets: ``x`` float32 of shape ``(n, 1, 28, 28)`` in
        ``[0, 1]``, ``y`` int64 in ``0..9``.

    Raises
    ------
    DatasetError
        If no searched directory holds all four files, or a file is malformed.
    """
    searched = _fashion_mnist_dirs(path)
    for directory in searched:
        files = [_find_idx(directory, stem) for stem in _FASHION_FILES]
        if all(f is not None for f in files):
            break
    else:
        listing = ", ".join(str(d) for d in searched)
        raise DatasetError(
            f"Fashion-MNIST not found in {listing} (each needs {', '.join(_FASHION_FILES)}, "
            "optionally .gz); install it with `apt-get install dataset-fashion-mnist` or pass the "
            f"directory holding the IDX files (data.path in the job spec / {FASHION_MNIST_ENV})"
        )
    train_x, train_y, test_x, test_y = (read_idx(f) for f in files if f is not None)
    train = _fashion_split(train_x, train_y, files[0], files[1], "fashion_mnist/train")
    test = _fashion_split(test_x, test_y, files[2], files[3], "fashion_mnist/test")
    return train, test


def _fashion_mnist_dirs(path: str | Path | None) -> list[Path]:
    """Directories to search, in order: ``path`` alone if given, else the env var and the defaults."""
    if path is not None:
        return [Path(path)]
    env = os.environ.get(FASHION_MNIST_ENV, "").strip()
    return [*([Path(env)] if env else []), *FASHION_MNIST_DIRS]


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The gzip or plain file for ``stem`` in ``directory``, gzip preferred; None if neither exists."""
    for name in (f"{stem}.gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _fashion_split(
    images: npt.NDArray[Any], labels: npt.NDArray[Any], images_file: Path | None,
    labels_file: Path | None, name: str,
) -> Dataset:
    """Check one split's arrays and convert them to a Dataset."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetError(
            f"{images_file}: expected uint8 images of shape (n, 28, 28), got {images.dtype} of "
            f"shape {images.shape}; this is not a Fashion-MNIST image file"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
        raise DatasetError(
            f"{labels_file}: expected {len(images):,} uint8 labels to match {images_file}, got "
            f"{labels.dtype} of shape {labels.shape}"
        )
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(
            f"{labels_file}: expected labels in 0..9, got a label {int(labels.max())}"
        )
    x = images.reshape(len(images), 1, 28, 28).astype(np.float32)
    x *= np.float32(1 / 255)
    return Dataset(x=x, y=labels.astype(np.int64), num_classes=10, name=name)


def _read_digits_file() -> npt.NDArray[np.float64] | None:
    """Read sklearn's digits.csv.gz without importing sklearn; None if it is absent or malformed."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        try:
            with gzip.open(Path(root) / _DIGITS_FILE, "rt", encoding="ascii") as fh:
                table = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, EOFError, ValueError, zlib.error):
            continue
        if _valid_digits(table):
            return table
    return None


def _digits_from_sklearn() -> npt.NDArray[np.float64]:
    """Fallback: load the digits through scikit-learn's own loader."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DatasetError(
            "digits: expected scikit-learn to be installed (the digits data ships with it), but it "
            "cannot be imported; install it with `pip install scikit-learn`"
        ) from exc
    bunch = sk_load_digits()
    table = np.column_stack([bunch.data, bunch.target]).astype(np.float64)
    if not _valid_digits(table):
        raise DatasetError(
            f"digits: expected scikit-learn's digits as 64 pixel columns in 0..16 and labels 0..9, "
            f"got an array of shape {table.shape}; reinstall it with "
            "`pip install --force-reinstall scikit-learn`"
        )
    return table


def _valid_digits(table: npt.NDArray[np.float64]) -> bool:
    """Whether ``table`` looks like the digits: 65 integral columns, pixels 0..16, labels 0..9."""
    return bool(
        table.ndim == 2 and table.shape[0] > 0 and table.shape[1] == 65
        and np.all(table == np.round(table))
        and table[:, :64].min() >= 0 and table[:, :64].max() <= 16
        and table[:, 64].min() >= 0 and table[:, 64].max() <= 9
    )


def _check_fraction(test_fraction: object) -> None:
    """Raise ConfigError unless ``0 < test_fraction < 1``."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) \
            or not 0 < test_fraction < 1:
        raise ConfigError(
            f"test_fraction: expected a number strictly between 0 and 1 (e.g. 0.2), got "
            f"{test_fraction!r}"
        )
