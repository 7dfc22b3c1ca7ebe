"""Datasets and partitioners: load a dataset and split it across federated clients.

Everything here needs only numpy at import time; loaders read local files (nothing is downloaded) and
partitioners are pure functions of their arguments and an injected ``numpy.random.Generator``.

- Types: :class:`Dataset` (features, int64 labels, ``num_classes``, name) and :class:`FederatedData`
  (one :class:`Dataset` per client plus a held-out test set).
- Partitioners: :func:`iid`, :func:`dirichlet`, :func:`shards`, :func:`natural`.
- Loaders: :func:`load_digits`, :func:`load_fashion_mnist`, :func:`synthetic_fedprox`, and
  :func:`read_idx` for IDX files.
- Entry point: :func:`load_federated` with the :data:`DATASETS` registry and :data:`PARTITIONS` names.
"""

from fedra.data._dataset import Dataset, FederatedData
from fedra.data._datasets import (
    DIGITS_SPLIT_SEED,
    FASHION_MNIST_DIRS,
    FASHION_MNIST_ENV,
    load_digits,
    load_fashion_mnist,
    stratified_split,
)
from fedra.data._idx import IDX_DTYPES, read_idx
from fedra.data._partition import DEFAULT_MAX_ATTEMPTS, dirichlet, iid, natural, shards
from fedra.data._registry import DATASETS, PARTITIONS, FederatedLoader, load_federated
from fedra.data._synthetic import synthetic_fedprox

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_ATTEMPTS",
    "DIGITS_SPLIT_SEED",
    "FASHION_MNIST_DIRS",
    "FASHION_MNIST_ENV",
    "IDX_DTYPES",
    "PARTITIONS",
    "Dataset",
    "FederatedData",
    "FederatedLoader",
    "dirichlet",
    "iid",
    "load_digits",
    "load_fashion_mnist",
    "load_federated",
    "natural",
    "read_idx",
    "shards",
    "stratified_split",
    "synthetic_fedprox",
]
