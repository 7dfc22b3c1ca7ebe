"""Partitioners: pure functions that split sample indices across federated clients.

Each returns a list with one sorted int64 index array per client; together the arrays hold every index
``0 .. num_samples - 1`` exactly once. All randomness comes from the ``rng`` passed in, so the same
generator state gives the same split.

- :func:`iid` -- a uniformly random, near-equal split.
- :func:`dirichlet` -- label skew with per-class client proportions ~ Dir(alpha)
  (Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification", arXiv:1909.06335).
- :func:`shards` -- the pathological non-IID split of McMahan et al. 2017, "Communication-Efficient
  Learning of Deep Networks from Decentralized Data" (AISTATS), section 3.
- :func:`natural` -- one client per natural group (user, writer, device).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError

__all__ = ["DEFAULT_MAX_ATTEMPTS", "dirichlet", "iid", "natural", "shards"]

#: How many Dirichlet draws :func:`dirichlet` tries before giving up on ``min_size``.
DEFAULT_MAX_ATTEMPTS: Final = 1000

IndexList = list[npt.NDArray[np.int64]]


def iid(num_samples: int, *, num_clients: int, rng: np.random.Generator) -> IndexList:
    """Split ``num_samples`` indices uniformly at random into ``num_clients`` near-equal parts.

    The IID baseline of McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
    Decentralized Data" (AISTATS): shuffle, then cut into parts whose sizes differ by at most one.

    Parameters
    ----------
    num_samples : int
        Number of samples to split (indices ``0 .. num_samples - 1``).
    num_clients : int
        Number of clients, ``1 <= num_clients <= num_samples``.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        One sorted int64 index array per client.

    Raises
    ------
    ConfigError
        If ``num_samples`` or ``num_clients`` is out of range.
    """
    _check_int("num_samples", num_samples, low=1)
    _check_clients(num_clients, num_samples)
    _check_rng(rng)
    perm = rng.permutation(num_samples).astype(np.int64)
    return [np.sort(part) for part in np.array_split(perm, num_clients)]


def dirichlet(
    labels: npt.ArrayLike,
    *,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> IndexList:
    """Split samples across clients with label skew drawn from a Dirichlet distribution.

    Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
    Classification" (arXiv:1909.06335): for each class, draw client proportions ``p ~ Dir(alpha * 1)``
    and give client ``k`` a random ``p_k`` share of that class's samples. Small ``alpha`` concentrates each
    class on few clients; large ``alpha`` approaches an IID split. As in the common reference
    implementations, the whole draw is repeated until every client holds at least ``min_size`` samples.

    Parameters
    ----------
    labels : array_like of int
        Class label of each sample, 1-D.
    num_clients : int
        Number of clients, ``1 <= num_clients``, ``num_clients * min_size <= len(labels)``.
    alpha : float
        Dirichlet concentration, ``> 0``.
    rng : numpy.random.Generator
        Source of randomness.
    min_size : int, default 1
        Smallest acceptable number of samples per client, ``>= 0``.
    max_attempts : int, default 1000
        Number of draws to try before giving up.

    Returns
    -------
    list of numpy.ndarray
        One sorted int64 index array per client.

    Raises
    ------
    ConfigError
        If an argument is out of range, or no draw within ``max_attempts`` gives every client
        ``min_size`` samples (``alpha`` too small for this many clients).
    """
    y = _check_labels(labels)
    _check_int("min_size", min_size, low=0)
    _check_int("max_attempts", max_attempts, low=1)
    _check_clients(num_clients, len(y))
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0 \
            or not np.isfinite(alpha):
        raise ConfigError(
            f"alpha: expected a finite Dirichlet concentration > 0 (small = more skewed, e.g. 0.1; "
            f"large = near IID, e.g. 100), got {alpha!r}"
        )
    if num_clients * min_size > len(y):
        raise ConfigError(
            f"min_size: expected num_clients * min_size <= number of samples ({len(y):,}), got "
            f"{num_clients} * {min_size} = {num_clients * min_size:,}; lower min_size or num_clients"
        )
    _check_rng(rng)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    smallest = 0
    for _ in range(max_attempts):
        # counts[c, k]: how many samples of class c client k gets.
        counts = np.empty((len(classes), num_clients), dtype=np.int64)
        for c, members in enumerate(classes):
            share = rng.dirichlet(np.full(num_clients, float(alpha)))
            bounds = np.floor(np.cumsum(share) * len(members)).astype(np.int64)
            bounds[-1] = len(members)  # cumsum may fall short of 1.0 by rounding
            counts[c] = np.diff(bounds, prepend=0)
        smallest = int(counts.sum(axis=0).min())
        if smallest >= min_size:
            break
    else:
        raise ConfigError(
            f"dirichlet partition: expected every client to get at least min_size={min_size} "
            f"samples, but in {max_attempts} draws of Dir(alpha={alpha}) over {num_clients} clients "
            f"the smallest client got {smallest} at best; raise alpha, lower num_clients or min_size"
        )
    owner = np.empty(len(y), dtype=np.int64)
    for members, row in zip(classes, counts, strict=True):
        owner[rng.permutation(members)] = np.repeat(np.arange(num_clients), row)
    return _group(owner, num_clients)


def shards(
    labels: npt.ArrayLike,
    *,
    num_clients: int,
    shards_per_client: int = 2,
    rng: np.random.Generator,
) -> IndexList:
    """Split samples with the pathological non-IID scheme of McMahan et al. 2017.

    McMahan, Moore, Ramage, Hampson & Aguera y Arcas 2017, "Communication-Efficient Learning of Deep
    Networks from Decentralized Data" (AISTATS), section 3: sort the data by label, divide it into
    ``num_clients * shards_per_client`` shards of (near-)equal size, and give each client
    ``shards_per_client`` shards chosen at random. With shards no larger than a class, each client sees
    at most about ``shards_per_client`` labels. Within a label, samples are shuffled before sharding.

    Parameters
    ----------
    labels : array_like of int
        Class label of each sample, 1-D.
    num_clients : int
        Number of clients, ``>= 1``.
    shards_per_client : int, default 2
        Shards each client receives, ``>= 1``; ``num_clients * shards_per_client <= len(labels)``.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        One sorted int64 index array per client.

    Raises
    ------
    ConfigError
        If an argument is out of range.
    """
    y = _check_labels(labels)
    _check_int("shards_per_client", shards_per_client, low=1)
    _check_clients(num_clients, len(y))
    num_shards = num_clients * shards_per_client
    if num_shards > len(y):
        raise ConfigError(
            f"shards_per_client: expected num_clients * shards_per_client <= number of samples "
            f"({len(y):,}), got {num_clients} * {shards_per_client} = {num_shards:,}; "
            "lower shards_per_client or num_clients"
        )
    _check_rng(rng)
    shuffled = rng.permutation(len(y))
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")].astype(np.int64)
    pieces = np.array_split(by_label, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in deal]


def natural(groups: npt.ArrayLike) -> IndexList:
    """Split samples by a natural group id: one client per distinct group, in sorted order of the id.

    The per-user ("natural") split of LEAF (Caldas et al. 2018, "LEAF: A Benchmark for Federated
    Settings", arXiv:1812.01097) and of the FedProx synthetic data: every writer, speaker or device is
    one client.

    Parameters
    ----------
    groups : array_like
        Group id of each sample, 1-D, any sortable dtype (integers, strings).

    Returns
    -------
    list of numpy.ndarray
        One sorted int64 index array per distinct group, ordered by group id.

    Raises
    ------
    ConfigError
        If ``groups`` is not 1-D or is empty.
    """
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise ConfigError(
            f"groups: expected a non-empty 1-D array of group ids (one per sample), got shape {g.shape}"
        )
    _, owner = np.unique(g, return_inverse=True)
    owner = owner.reshape(-1).astype(np.int64)
    return _group(owner, int(owner.max()) + 1)


def _group(owner: npt.NDArray[np.int64], num_clients: int) -> IndexList:
    """Turn a per-sample owner array into per-client sorted index arrays."""
    order = np.argsort(owner, kind="stable").astype(np.int64)  # stable keeps indices ascending
    sizes = np.bincount(owner, minlength=num_clients)
    return list(np.split(order, np.cumsum(sizes)[:-1]))


def _check_labels(labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Return ``labels`` as a 1-D int64 array, or raise ConfigError."""
    y: npt.NDArray[Any] = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ConfigError(
            f"labels: expected a non-empty 1-D integer array (one label per sample), got a "
            f"{y.ndim}-D {y.dtype} array of shape {y.shape}"
        )
    return y.astype(np.int64, copy=False)


def _check_int(name: str, value: object, *, low: int) -> int:
    """Return ``value`` as an int, or raise ConfigError unless it is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _check_clients(num_clients: object, num_samples: int) -> None:
    """Raise ConfigError unless ``1 <= num_clients <= num_samples``."""
    if _check_int("num_clients", num_clients, low=1) > num_samples:
        raise ConfigError(
            f"num_clients: expected at most one client per sample ({num_samples:,}), got "
            f"{num_clients:,}; lower num_clients or use a larger dataset"
        )


def _check_rng(rng: object) -> None:
    """Raise ConfigError unless ``rng`` is a numpy Generator."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )
