"""The sparse communication graph of SecAgg+ and the choice of its degree and threshold.

Bell, Bonawitz, Gascón, Lepoint and Raykova (2020), "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (CCS), Section 3: instead of sharing secrets with and masking against all n
clients (Bonawitz et al. 2017), each client does so only with its k = O(log n) neighbours in a random
Harary graph H(n, k): the clients, in a random order, sit on a ring and each is joined to the k/2 nearest
on either side. The order comes from a seed every party knows, so each client computes its own
neighbourhood instead of trusting the server's word for it.

A client's secrets are Shamir-shared among its *holders*: its neighbours and itself (so the complete graph
k = n - 1 is exactly Bonawitz et al.'s protocol, t-of-n). fedra requires a strict majority threshold,
``2 t > k + 1``: an honest holder reveals one of the two secrets of a peer, never both, so no server, even
one that lies about who dropped out, can collect t shares of both (Bonawitz et al. 2017, Section 4,
the t > n/2 condition; Bell et al. 2020 likewise take t as a fraction of k above 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedra.secagg._errors import SecAggError
from fedra.secagg._prg import prg_mask

__all__ = ["check_parameters", "default_parameters", "neighbourhoods"]


def default_parameters(num_clients: int) -> tuple[int, int]:
    """``(degree, threshold)`` for ``num_clients``: k the even number nearest above 3 log2 n (all the
    others when that is n - 1 or more), and t = floor((k + 1) / 2) + 1, the smallest strict majority of
    the k + 1 holders."""
    if num_clients < 2:
        raise SecAggError(f"secure aggregation: expected at least 2 clients, got {num_clients}")
    degree = 2 * math.ceil(1.5 * math.log2(num_clients))
    if degree >= num_clients - 1:
        degree = num_clients - 1
    return degree, (degree + 1) // 2 + 1


def check_parameters(*, num_clients: int, degree: int, threshold: int) -> None:
    """Refuse a degree or a threshold the protocol cannot run safely with; explain what is allowed."""
    if num_clients < 2:
        raise SecAggError(f"secure aggregation: expected at least 2 clients, got {num_clients}")
    if not 2 <= degree <= num_clients - 1:
        raise SecAggError(f"degree: expected 2 <= k <= n - 1 = {num_clients - 1}, got {degree}")
    if degree < num_clients - 1 and degree % 2:
        raise SecAggError(f"degree: a sparse Harary graph needs an even k, got {degree}; use {degree + 1}")
    holders = degree + 1
    if not holders < 2 * threshold or threshold > holders:
        raise SecAggError(
            f"threshold: expected {holders // 2 + 1} <= t <= {holders} (a strict majority of each client's "
            f"{holders} share holders), got {threshold}")


def neighbourhoods(clients: Sequence[str], *, degree: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Each client's neighbours (itself excluded) in the random Harary graph H(n, k) drawn from ``seed``.

    Parameters
    ----------
    clients
        The round's clients, distinct.
    degree
        k: ``n - 1`` for the complete graph, else an even number.
    seed
        32 bytes known to every party; the order on the ring is the AES-CTR stream of the seed, sorted.

    Returns
    -------
    dict[str, frozenset[str]]
        Symmetric: ``v in result[u]`` exactly when ``u in result[v]``.
    """
    n = len(clients)
    if len(set(clients)) != n:
        raise SecAggError("clients: expected distinct client ids, got duplicates")
    if degree >= n - 1:
        return {u: frozenset(clients) - {u} for u in clients}
    if degree % 2:
        raise SecAggError(f"degree: a sparse Harary graph needs an even k, got {degree}")
    keys = prg_mask(seed, size=n, ring_bits=64)
    order = [clients[i] for i in np.argsort(keys, kind="stable")]
    half = degree // 2
    return {u: frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d)
            for i, u in enumerate(order)}
