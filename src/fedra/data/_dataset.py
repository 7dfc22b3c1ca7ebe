"""The two data types of :mod:`fedra.data`: a labelled :class:`Dataset` and a partitioned :class:`FederatedData`.

Both are frozen dataclasses over numpy arrays. They check their invariants once, at construction (labels
are int64 and lie in ``[0, num_classes)``, features and labels have the same length), so code that receives
one can rely on them. The arrays themselves stay writable: frameworks such as PyTorch warn on read-only
buffers, and copying every client's data to avoid that would double memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError, DatasetError

__all__ = ["Dataset", "FederatedData"]


@final
@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset held in memory.

    Parameters
    ----------
    x : numpy.ndarray
        Features, one row (first axis) per sample; any dtype and trailing shape.
    y : numpy.ndarray
        Labels, shape ``(len(x),)``, dtype int64, each in ``[0, num_classes)``.
    num_classes : int
        Number of classes of the task (not of the labels present: a client may miss some classes).
    name : str
        A human-readable name used in logs and error messages, e.g. ``"digits/train"``.

    Raises
    ------
    DatasetError
        If the arrays do not satisfy the invariants above.

    Notes
    -----
    Equality is identity (``eq=False``): comparing two datasets element-wise is rarely what is meant and
    numpy arrays have no single truth value.
    """

    x: npt.NDArray[Any]
    y: npt.NDArray[np.int64]
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or not isinstance(self.y, np.ndarray):
            raise DatasetError(
                f"dataset {self.name!r}: expected x and y to be numpy arrays, got "
                f"{type(self.x).__name__} and {type(self.y).__name__}; wrap them with np.asarray"
            )
        if self.y.ndim != 1 or self.y.dtype != np.int64:
            raise DatasetError(
                f"dataset {self.name!r}: expected y to be a 1-D int64 array, got {self.y.ndim}-D "
                f"{self.y.dtype}; convert it with y.astype(np.int64).ravel()"
            )
        if self.x.ndim < 1 or self.x.shape[0] != self.y.shape[0]:
            raise DatasetError(
                f"dataset {self.name!r}: expected as many feature rows as labels ({self.y.shape[0]:,}), "
                f"got x of shape {self.x.shape}"
            )
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int | np.integer) \
                or self.num_classes < 1:
            raise DatasetError(
                f"dataset {self.name!r}: expected num_classes to be a positive integer, "
                f"got {self.num_classes!r}"
            )
        if self.y.size:
            low, high = int(self.y.min()), int(self.y.max())
            if low < 0 or high >= self.num_classes:
                raise DatasetError(
                    f"dataset {self.name!r}: expected labels in [0, {self.num_classes}), got labels "
                    f"from {low} to {high}; relabel the data or raise num_classes"
                )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: npt.ArrayLike, *, name: str | None = None) -> Dataset:
        """Return the samples at ``indices`` as a new dataset (the arrays are copies).

        Parameters
        ----------
        indices : array_like of int
            Positions of the samples to keep, in the order to keep them; a 1-D integer array such as
            one element of a partitioner's output.
        name : str, optional
            Name of the new dataset; defaults to this dataset's name.

        Returns
        -------
        Dataset
            A dataset with the same ``num_classes``.

        Raises
        ------
        ConfigError
            If ``indices`` is not a 1-D integer array or holds a position outside ``[0, len(self))``.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ConfigError(
                f"subset of {self.name!r}: expected a 1-D array of integer indices, got a "
                f"{idx.ndim}-D {idx.dtype} array"
            )
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ConfigError(
                f"subset of {self.name!r}: expected indices in [0, {len(self)}), got indices from "
                f"{int(idx.min())} to {int(idx.max())}"
            )
        return Dataset(
            x=self.x[idx],
            y=self.y[idx],
            num_classes=self.num_classes,
            name=self.name if name is None else name,
        )

    def class_counts(self) -> npt.NDArray[np.int64]:
        """Return the number of samples of each class, shape ``(num_classes,)``."""
        return np.bincount(self.y, minlength=self.num_classes).astype(np.int64)


@final
@dataclass(frozen=True, eq=False)
class FederatedData:
    """A dataset loaded and split across clients: the output of :func:`fedra.data.load_federated`.

    Parameters
    ----------
    name : str
        The dataset's registry name, e.g. ``"fashion_mnist"``.
    partitions : list of Dataset
        One training dataset per client, in client order.
    test : Dataset
        The held-out test set, evaluated centrally.
    num_classes : int
        Number of classes; every partition and the test set share it.
    client_tests : list of Dataset, optional
        Per-client held-out sets, where the dataset defines them (the FedProx synthetic data does);
        ``test`` is then their union. ``None`` otherwise.

    Raises
    ------
    DatasetError
        If there are no partitions, or the parts disagree on ``num_classes``, or ``client_tests`` does
        not have one entry per client.
    """

    name: str
    partitions: list[Dataset]
    test: Dataset
    num_classes: int
    client_tests: list[Dataset] | None = None

    def __post_init__(self) -> None:
        if not self.partitions:
            raise DatasetError(
                f"federated dataset {self.name!r}: expected at least one client partition, got none"
            )
        parts = [*self.partitions, self.test, *(self.client_tests or [])]
        mismatched = sorted({p.num_classes for p in parts if p.num_classes != self.num_classes})
        if mismatched:
            raise DatasetError(
                f"federated dataset {self.name!r}: expected every part to have num_classes="
                f"{self.num_classes}, got parts with {mismatched}"
            )
        if self.client_tests is not None and len(self.client_tests) != len(self.partitions):
            raise DatasetError(
                f"federated dataset {self.name!r}: expected one client test set per client "
                f"({len(self.partitions)}), got {len(self.client_tests)}"
            )

    @property
    def num_clients(self) -> int:
        """Number of clients (partitions)."""
        return len(self.partitions)

    @property
    def num_train_samples(self) -> int:
        """Total number of training samples over all clients."""
        return sum(len(p) for p in self.partitions)
