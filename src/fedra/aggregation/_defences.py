"""Byzantine defences beyond Krum: Bulyan, centered clipping, norm bounding and FLTrust.

El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium",
ICML 2018 (Bulyan): with ``n >= 4f + 3``, select ``theta = n - 2f`` updates by applying Krum again and
again to those not yet selected, then, coordinate by coordinate, average the ``beta = theta - 2f`` selected
values closest to their median.

Karimireddy, He and Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021
(centered clipping): starting from a center ``v`` (the previous round's aggregate, or zero for deltas),
``v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)``, repeated ``L`` times. Each update moves the
result by at most ``tau / n`` per iteration, so ``f`` attackers move it by at most ``tau f / n``.

Sun, Kairouz, Suresh and McMahan, "Can You Really Backdoor Federated Learning?", 2019 (norm bounding):
an update whose L2 norm exceeds ``M`` is scaled down to norm ``M``.

Cao, Fang, Liu and Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021:
the server trains on a small clean root dataset to get ``g0``; each client update ``g_i`` gets the trust
score ``TS_i = ReLU(cos(g_i, g0))``, is rescaled to ``||g0||``, and the result is
``sum_i TS_i (||g0|| / ||g_i||) g_i / sum_i TS_i``.

Centered clipping, norm bounding and FLTrust act on *updates* (each client's model minus the global model
it started from), not on models: the caller subtracts the global model first. Bulyan, like Krum, is
indifferent (distances and medians do not change when one model is subtracted from all).

Numerics
--------
Norms, inner products and distances are over the whole update (summed over every array passed; pass only
the trainable parameters if buffers should not count), in float64. Results are cast back to each array's
dtype (integers rounded to nearest), like the rest of :mod:`fedra.aggregation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedra.aggregation._mean import (
    Arrays,
    as_arrays,
    cast_back,
    check_like,
    check_same_names,
    check_updates,
)
from fedra.aggregation._robust import _column_blocks, _squared_distances
from fedra.errors import AggregationError

__all__ = ["bulyan", "centered_clip", "fltrust", "norm_bound"]

_F64 = np.dtype(np.float64)


def _check_positive(value: object, *, what: str) -> float:
    """``value`` as a float, checking that it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AggregationError(f"{what}: expected a finite number > 0, got {type(value).__name__}")
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise AggregationError(f"{what}: expected a finite number > 0, got {x!r}")
    return x


def _check_int(value: object, *, what: str, low: int) -> int:
    """``value`` as an int, checking that it is an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(f"{what}: expected an int >= {low}, got {type(value).__name__}")
    if int(value) < low:
        raise AggregationError(f"{what}: expected an int >= {low}, got {int(value)}")
    return int(value)


def check_reference(
    reference: Arrays, like: dict[str, npt.NDArray[Any]], *, what: str
) -> dict[str, npt.NDArray[Any]]:
    """Check that ``reference`` has the names, shapes and dtypes of ``like``; return it as a dict."""
    arrays = as_arrays(reference, what=what)
    check_same_names(list(like), arrays, what=what)
    for name, array in like.items():
        check_like(name, arrays[name], array, what=what)
    return arrays


def flat64(update: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    """One update as a single float64 vector (arrays in their order, each flattened)."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in update.values()])


def unflatten(
    vector: npt.NDArray[np.float64], like: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """Split a float64 vector into arrays shaped and typed like ``like`` (cast back, ints rounded)."""
    out: dict[str, npt.NDArray[Any]] = {}
    lo = 0
    for name, array in like.items():
        hi = lo + array.size
        out[name] = cast_back(np.array(vector[lo:hi]), array.dtype).reshape(array.shape)
        lo = hi
    return out


def _norms(checked: list[dict[str, npt.NDArray[Any]]]) -> npt.NDArray[np.float64]:
    """L2 norm of every update over all its arrays, in float64."""
    out = np.zeros(len(checked), dtype=np.float64)
    for i, update in enumerate(checked):
        for array in update.values():
            flat = np.asarray(array, dtype=np.float64).reshape(-1)
            out[i] += float(flat @ flat)
    return np.sqrt(out)


def norm_bound(updates: Sequence[Arrays], *, max_norm: float) -> list[dict[str, npt.NDArray[Any]]]:
    """Scale every update whose L2 norm exceeds ``max_norm`` down to that norm (Sun et al., 2019).

    Parameters
    ----------
    updates : Sequence[Arrays]
        Client updates (model minus global model) with the same array names, shapes and dtypes.
    max_norm : float
        ``M``, the largest L2 norm (over the whole update) let through; finite and > 0.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        One new update per input, in order: ``u * min(1, M / ||u||)``, in each array's dtype. Updates within
        the bound are returned as exact copies.

    Raises
    ------
    AggregationError
        If the updates are invalid or ``max_norm`` is not a finite number > 0.

    Examples
    --------
    >>> import numpy as np
    >>> [u["w"] for u in norm_bound([{"w": np.array([3.0, 4.0])}, {"w": np.array([0.3, 0.4])}], max_norm=1.0)]
    [array([0.6, 0.8]), array([0.3, 0.4])]
    """
    checked = check_updates(updates)
    bound = _check_positive(max_norm, what="max_norm")
    out: list[dict[str, npt.NDArray[Any]]] = []
    for update, norm in zip(checked, _norms(checked), strict=True):
        if norm <= bound:
            out.append({name: np.array(a, copy=True) for name, a in update.items()})
            continue
        factor = bound / norm
        scaled: dict[str, npt.NDArray[Any]] = {}
        for name, a in update.items():
            values = np.array(a, dtype=np.float64)
            scaled[name] = cast_back(np.multiply(values, factor, out=values), a.dtype)
        out.append(scaled)
    return out


def centered_clip(
    updates: Sequence[Arrays], *, center: Arrays, tau: float, iterations: int = 1
) -> dict[str, npt.NDArray[Any]]:
    """Centered clipping (Karimireddy, He and Jaggi, ICML 2021).

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client updates with the same array names, shapes and dtypes.
    center : Arrays
        The starting point ``v``, shaped like an update: in the paper the previous round's aggregate
        (server momentum); zeros are a safe default for deltas.
    tau : float
        The clipping radius, finite and > 0.
    iterations : int
        ``L``, how many clipping steps to run (the paper finds 1 enough when the center is good).

    Returns
    -------
    dict[str, numpy.ndarray]
        ``v`` after ``L`` steps of ``v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)``, in each
        array's dtype. Each step moves ``v`` by at most ``tau``, and any one update's share of the move is at
        most ``tau / n``.

    Raises
    ------
    AggregationError
        If the updates or the center are invalid, ``tau`` is not a finite number > 0, or ``iterations`` is
        not an int >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([1.0])}, {"w": np.array([-1.0])}, {"w": np.array([10.0])}]
    >>> centered_clip(ups, center={"w": np.array([0.0])}, tau=2.0)["w"]  # (1 - 1 + 2) / 3
    array([0.66666667])
    """
    checked = check_updates(updates)
    v = flat64(check_reference(center, checked[0], what="center"))
    radius = _check_positive(tau, what="tau")
    steps = _check_int(iterations, what="iterations", low=1)
    xs = np.stack([flat64(u) for u in checked])
    n = len(checked)
    for _ in range(steps):
        diffs = xs - v
        dist = np.sqrt(np.einsum("ij,ij->i", diffs, diffs))
        # Only updates farther than tau are scaled (an update at the center contributes nothing anyway).
        scale = np.ones_like(dist)
        np.divide(radius, dist, out=scale, where=dist > radius)
        v = v + (scale @ diffs) / n
    return unflatten(v, checked[0])


def fltrust(
    updates: Sequence[Arrays], *, server_update: Arrays
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.float64]]:
    """FLTrust: trust-weighted mean of norm-matched updates (Cao, Fang, Liu and Gong, NDSS 2021).

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client updates (model minus global model) with the same array names, shapes and dtypes.
    server_update : Arrays
        ``g0``, the update the server computed on its small clean root dataset from the same global model;
        shaped like an update, with a nonzero norm.

    Returns
    -------
    tuple[dict[str, numpy.ndarray], numpy.ndarray]
        The aggregate ``sum_i TS_i (||g0|| / ||g_i||) g_i / sum_i TS_i`` in each array's dtype, and the trust
        scores ``TS_i = max(0, cos(g_i, g0))`` (shape ``(n,)``, float64; 0 for a zero update). When every
        score is 0 no client is trusted and the aggregate is all zeros: the global model does not move.

    Raises
    ------
    AggregationError
        If the updates or the server update are invalid, or the server update is zero.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([2.0, 0.0])}, {"w": np.array([-5.0, 0.0])}]
    >>> agg, scores = fltrust(ups, server_update={"w": np.array([1.0, 0.0])})
    >>> agg["w"], scores
    (array([1., 0.]), array([1., 0.]))
    """
    checked = check_updates(updates)
    g0 = flat64(check_reference(server_update, checked[0], what="server_update"))
    norm0 = float(np.sqrt(g0 @ g0))
    if norm0 == 0.0:
        raise AggregationError(
            "server_update: expected a nonzero update from the root dataset, got all zeros"
        )
    xs = np.stack([flat64(u) for u in checked])
    norms = np.sqrt(np.einsum("ij,ij->i", xs, xs))
    safe = np.where(norms > 0, norms, 1.0)
    cosines = np.where(norms > 0, (xs @ g0) / (safe * norm0), 0.0)
    scores = np.asarray(np.maximum(cosines, 0.0), dtype=np.float64)
    total = float(scores.sum())
    if total == 0.0:
        return unflatten(np.zeros_like(g0), checked[0]), scores
    weights = scores * (norm0 / safe)
    return unflatten((weights @ xs) / total, checked[0]), scores


def _check_bulyan(num_byzantine: object, n: int) -> int:
    """Check ``num_byzantine`` and Bulyan's condition ``n >= 4f + 3``; return ``f``."""
    f = _check_int(num_byzantine, what="num_byzantine", low=0)
    if n < 4 * f + 3:
        raise AggregationError(
            f"Bulyan with num_byzantine={f} needs n >= 4f + 3: expected at least {4 * f + 3} updates, "
            f"got {n}; lower num_byzantine or wait for more updates"
        )
    return f


def _iterated_krum(distances: npt.NDArray[np.float64], f: int, count: int) -> list[int]:
    """Bulyan's selection: ``count`` times, the Krum winner among the updates not yet selected."""
    remaining = list(range(distances.shape[0]))
    selected: list[int] = []
    for _ in range(count):
        r = len(remaining)
        if r == 1:
            selected.append(remaining.pop())
            break
        # Krum's n - f - 2 nearest neighbours within the remaining set; near the end of the selection that
        # count reaches 0, where it stops telling updates apart, so at least 1 neighbour counts.
        k = min(r - 1, max(1, r - f - 2))
        sub = distances[np.ix_(remaining, remaining)].copy()
        np.fill_diagonal(sub, np.inf)
        sub.sort(axis=1)
        scores = sub[:, :k].sum(axis=1)
        # Ties in score (always the case for the two updates nearest each other when k = 1) go to the update
        # whose next nearest neighbours are nearer, then to the lowest index: the choice then depends on the
        # updates, not on their order.
        keys = [sub[:, j] for j in range(r - 2, k - 1, -1)]
        best = int(np.lexsort([*keys, scores])[0])
        selected.append(remaining.pop(best))
    return selected


def bulyan(
    updates: Sequence[Arrays], *, num_byzantine: int
) -> tuple[dict[str, npt.NDArray[Any]], list[int]]:
    """Bulyan over Krum (El Mhamdi, Guerraoui and Rouault, ICML 2018).

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client models or updates with the same array names, shapes and dtypes.
    num_byzantine : int
        ``f``, the most updates assumed Byzantine; Bulyan needs ``n >= 4f + 3``.

    Returns
    -------
    tuple[dict[str, numpy.ndarray], list[int]]
        The aggregate, in each array's dtype, and the ``theta = n - 2f`` indices Krum selected, in the order
        selected. Per coordinate the aggregate is the mean of the ``beta = n - 4f`` selected values closest
        to their median (ties in distance to the smaller value); the kept values are summed in sorted
        order, so the result does not depend on the order of the selected updates.

    Raises
    ------
    AggregationError
        If the updates are invalid, ``num_byzantine`` is not an int >= 0, or ``n < 4f + 3``.

    Notes
    -----
    Each selection step scores the remaining ``r`` updates by Krum with ``max(1, r - f - 2)`` neighbours,
    from squared distances over the whole model computed once (as :func:`~fedra.aggregation.krum_scores`);
    ties in score go to the update whose next nearest neighbours are nearer (lexicographically), then to
    the lowest index.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([v])} for v in (0.0, 1.0, 2.5, 3.0, 100.0, 4.5, 7.0)]
    >>> agg, selected = bulyan(ups, num_byzantine=1)  # theta = 5 selected, beta = 3 kept per coordinate
    >>> agg["w"], selected  # the mean of 2.5, 3.0 and 4.5, the selected values closest to their median
    (array([3.33333333]), [2, 3, 1, 5, 6])
    """
    checked = check_updates(updates)
    n = len(checked)
    f = _check_bulyan(num_byzantine, n)
    theta = n - 2 * f
    beta = theta - 2 * f
    selected = _iterated_krum(_squared_distances(checked), f, theta)
    chosen = [checked[i] for i in selected]
    out: dict[str, npt.NDArray[Any]] = {}
    for name, first in checked[0].items():
        result = np.empty(first.size, dtype=np.float64)
        for lo, hi, stack in _column_blocks(chosen, name, _F64):
            median = np.median(stack, axis=0)
            # Primary key: distance to the median; secondary: the value, so ties do not depend on order.
            order = np.lexsort((stack, np.abs(stack - median)), axis=0)[:beta]
            kept = np.sort(np.take_along_axis(stack, order, axis=0), axis=0)
            result[lo:hi] = np.add.reduce(kept, axis=0) / beta
        out[name] = cast_back(result, first.dtype).reshape(first.shape)
    return out, selected
