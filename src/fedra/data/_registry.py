"""The dataset registry and :func:`load_federated`, the one entry point from a job spec to client data.

``DATASETS`` maps a name to a *federated loader*: a function taking the keyword arguments of
:func:`load_federated` (less ``name``) and returning :class:`~fedra.data.FederatedData`. Adding a dataset
is adding one entry. Centralised datasets (digits, Fashion-MNIST) load a train/test pair and split the
training set with a partitioner; the FedProx synthetic data is generated per user and only has its
natural split.

Arguments that do not apply are handled by kind: an optional one that is set (``alpha`` without
``partition="dirichlet"``, ``path`` for a dataset that reads no files, an unknown ``**params`` key)
raises :class:`~fedra.errors.ConfigError`; ``shards_per_client`` (always present, with a default) is
used only by ``"shards"``; ``test_fraction`` does not apply to Fashion-MNIST, whose test set is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol

import numpy as np

from fedra.data._dataset import Dataset, FederatedData
from fedra.data._datasets import load_digits, load_fashion_mnist
from fedra.data._partition import dirichlet, iid, shards
from fedra.data._synthetic import synthetic_fedprox
from fedra.errors import ConfigError

__all__ = ["DATASETS", "PARTITIONS", "FederatedLoader", "load_federated"]

#: Partition names accepted by :func:`load_federated`.
PARTITIONS: Final = ("dirichlet", "iid", "natural", "shards")


class FederatedLoader(Protocol):
    """A registered dataset: loads it and splits the training data across ``num_clients`` clients."""

    def __call__(
        self,
        *,
        num_clients: int,
        partition: str,
        alpha: float | None,
        shards_per_client: int,
        seed: int,
        path: str | Path | None,
        test_fraction: float | None,
        params: Mapping[str, object],
    ) -> FederatedData: ...


def load_federated(
    name: str,
    *,
    num_clients: int,
    partition: str,
    alpha: float | None = None,
    shards_per_client: int = 2,
    seed: int = 0,
    path: str | Path | None = None,
    test_fraction: float | None = None,
    **params: object,
) -> FederatedData:
    """Load a registered dataset and split its training data across clients.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`: ``"digits"``, ``"fashion_mnist"`` or ``"synthetic"``.
    num_clients : int
        Number of clients. For ``"synthetic"`` this is the number of generated users.
    partition : str
        One of :data:`PARTITIONS`: ``"iid"``, ``"dirichlet"`` (needs ``alpha``), ``"shards"`` or
        ``"natural"`` (the only split of ``"synthetic"``, and its only valid value).
    alpha : float, optional
        Dirichlet concentration for ``partition="dirichlet"``; must be None otherwise.
    shards_per_client : int, default 2
        Shards per client for ``partition="shards"``.
    seed : int, default 0
        Seeds the partition (and the generator, for ``"synthetic"``). The same seed gives the same
        split. The digits test set does not depend on it.
    path : str or pathlib.Path, optional
        Directory of the dataset's files (Fashion-MNIST only); None searches the default places.
    test_fraction : float, optional
        Held-out fraction: digits default 0.2, synthetic default 0.1 (of each user). Ignored by
        Fashion-MNIST, which has a fixed 10,000-image test set.
    **params
        Dataset-specific options. ``"synthetic"``: ``synthetic_alpha`` (default 1.0),
        ``synthetic_beta`` (default 1.0), ``synthetic_iid`` (default False).

    Returns
    -------
    FederatedData
        One training dataset per client, plus the centralised test set.

    Raises
    ------
    ConfigError
        If the name, the partition or an argument is invalid for this dataset.
    DatasetError
        If the dataset's files are missing or malformed.
    """
    loader = DATASETS.get(name) if isinstance(name, str) else None
    if loader is None:
        raise ConfigError(
            f"dataset: expected one of {', '.join(sorted(DATASETS))}, got {name!r}"
        )
    if partition not in PARTITIONS:
        raise ConfigError(
            f"partition: expected one of {', '.join(PARTITIONS)}, got {partition!r}"
        )
    if alpha is not None and partition != "dirichlet":
        raise ConfigError(
            f"alpha: applies only to partition='dirichlet', got alpha={alpha!r} with "
            f"partition={partition!r}; remove alpha or use the dirichlet partition"
        )
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer) \
            or num_clients < 1:
        raise ConfigError(f"num_clients: expected an integer >= 1, got {num_clients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    return loader(
        num_clients=num_clients, partition=partition, alpha=alpha,
        shards_per_client=shards_per_client, seed=seed, path=path, test_fraction=test_fraction,
        params=params,
    )


def _split(
    name: str, train: Dataset, test: Dataset, *, num_clients: int, partition: str,
    alpha: float | None, shards_per_client: int, seed: int,
) -> FederatedData:
    """Partition a centralised training set and wrap the result."""
    rng = np.random.default_rng(seed)
    if partition == "iid":
        parts = iid(len(train), num_clients=num_clients, rng=rng)
    elif partition == "dirichlet":
        if alpha is None:
            raise ConfigError(
                "alpha: expected a Dirichlet concentration > 0 with partition='dirichlet' "
                "(e.g. 0.1 for strong skew, 100 for near IID), got None"
            )
        parts = dirichlet(train.y, num_clients=num_clients, alpha=alpha, rng=rng)
    elif partition == "shards":
        parts = shards(
            train.y, num_clients=num_clients, shards_per_client=shards_per_client, rng=rng
        )
    else:
        raise ConfigError(
            f"partition: {name!r} has no natural per-user split; expected one of dirichlet, iid, "
            f"shards, got {partition!r}"
        )
    return FederatedData(
        name=name,
        partitions=[train.subset(p, name=f"{name}/client{k:04d}") for k, p in enumerate(parts)],
        test=test,
        num_classes=train.num_classes,
    )


def _check_no_params(name: str, params: Mapping[str, object], allowed: tuple[str, ...] = ()) -> None:
    """Raise ConfigError if ``params`` has a key not in ``allowed``."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        expected = f"only {', '.join(allowed)}" if allowed else "none"
        raise ConfigError(
            f"params: dataset {name!r} takes {expected} as extra parameters, got {', '.join(unknown)}"
        )


def _check_no_path(name: str, path: str | Path | None) -> None:
    """Raise ConfigError if ``path`` is set for a dataset that reads no files."""
    if path is not None:
        raise ConfigError(
            f"path: dataset {name!r} reads no files from a directory, got path={str(path)!r}; "
            "remove it"
        )


def _load_digits(
    *, num_clients: int, partition: str, alpha: float | None, shards_per_client: int, seed: int,
    path: str | Path | None, test_fraction: float | None, params: Mapping[str, object],
) -> FederatedData:
    """Federated loader for scikit-learn's digits."""
    _check_no_params("digits", params)
    _check_no_path("digits", path)
    train, test = load_digits(test_fraction=0.2 if test_fraction is None else test_fraction)
    return _split("digits", train, test, num_clients=num_clients, partition=partition,
                  alpha=alpha, shards_per_client=shards_per_client, seed=seed)


def _load_fashion_mnist(
    *, num_clients: int, partition: str, alpha: float | None, shards_per_client: int, seed: int,
    path: str | Path | None, test_fraction: float | None, params: Mapping[str, object],
) -> FederatedData:
    """Federated loader for Fashion-MNIST (its official test set; ``test_fraction`` is ignored)."""
    _check_no_params("fashion_mnist", params)
    if partition == "natural":  # fail before reading 30 MB
        raise ConfigError(
            "partition: 'fashion_mnist' has no natural per-user split; expected one of dirichlet, "
            "iid, shards, got 'natural'"
        )
    train, test = load_fashion_mnist(path)
    return _split("fashion_mnist", train, test, num_clients=num_clients, partition=partition,
                  alpha=alpha, shards_per_client=shards_per_client, seed=seed)


_SYNTHETIC_PARAMS: Final = ("synthetic_alpha", "synthetic_beta", "synthetic_iid")


def _load_synthetic(
    *, num_clients: int, partition: str, alpha: float | None, shards_per_client: int, seed: int,
    path: str | Path | None, test_fraction: float | None, params: Mapping[str, object],
) -> FederatedData:
    """Federated loader for FedProx's synthetic(alpha, beta): one client per generated user."""
    _check_no_params("synthetic", params, _SYNTHETIC_PARAMS)
    _check_no_path("synthetic", path)
    if partition != "natural":
        raise ConfigError(
            f"partition: the 'synthetic' dataset is generated per user (one client per user, "
            f"num_clients users), so its only split is 'natural'; expected partition='natural', "
            f"got {partition!r}. For label skew, raise synthetic_beta"
        )
    syn_iid = params.get("synthetic_iid", False)
    if not isinstance(syn_iid, bool):
        raise ConfigError(f"synthetic_iid: expected true or false, got {syn_iid!r}")
    return synthetic_fedprox(
        alpha=_number(params, "synthetic_alpha", 1.0), beta=_number(params, "synthetic_beta", 1.0),
        num_users=num_clients,
        rng=np.random.default_rng(seed), iid=syn_iid,
        test_fraction=0.1 if test_fraction is None else test_fraction,
    )


def _number(params: Mapping[str, object], key: str, default: float) -> float:
    """``params[key]`` as a float (``default`` if absent), or raise ConfigError if it is not a number."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number >= 0, got {value!r}")
    return float(value)


#: Registered datasets: name -> federated loader.
DATASETS: Final[dict[str, FederatedLoader]] = {
    "digits": _load_digits,
    "fashion_mnist": _load_fashion_mnist,
    "synthetic": _load_synthetic,
}
