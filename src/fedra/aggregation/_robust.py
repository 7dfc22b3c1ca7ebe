"""Byzantine-robust aggregation: coordinate-wise median and trimmed mean, Krum and Multi-Krum.

Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018: the coordinate-wise median, and the coordinate-wise beta-trimmed mean (drop the
largest and smallest ``floor(beta * n)`` values of each coordinate, average the rest).

Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017: with ``n`` updates of which at most ``f`` are Byzantine and ``n > 2f + 2``,
update ``i`` scores the sum of its squared Euclidean distances to its ``n - f - 2`` nearest other updates;
Krum selects the lowest score, Multi-Krum averages the ``m`` lowest.

Numerics
--------
The coordinate-wise rules work in column blocks of a bounded size (never a full ``n x d`` copy) in the
accumulator dtype of :mod:`fedra.aggregation._mean` (float32 for float16/float32, float64 otherwise), cast
back to each array's dtype (integers rounded to nearest). Both are exactly invariant under a permutation
of the updates: the median is an order statistic and the trimmed mean sums the sorted survivors.

Krum's distances are over the whole model (summed over every array passed; pass only the trainable
parameters if buffers should not count). They come from Gram matrices accumulated block by block in
float64, ``||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b``, clamped at 0; each block is centred on its
coordinate-wise mean first, which leaves distances unchanged and limits cancellation. Ties in score go to
the lowest index, so the selection is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fedra.aggregation._mean import (
    Arrays,
    accumulator_dtype,
    cast_back,
    check_updates,
    check_weights,
    weighted_mean,
)
from fedra.errors import AggregationError

__all__ = ["coordinate_median", "krum", "krum_scores", "multi_krum", "trimmed_mean"]

#: Bytes of the ``n x block`` stack one coordinate-wise step holds at a time.
_STACK_BYTES: Final = 16 << 20


def _column_blocks(
    updates: list[dict[str, npt.NDArray[Any]]], name: str, dtype: np.dtype[Any]
) -> Iterator[tuple[int, int, npt.NDArray[Any]]]:
    """Yield ``(lo, hi, stack)``: the ``n x (hi - lo)`` stack of column block ``lo:hi`` of array ``name``."""
    flats = [u[name].reshape(-1) for u in updates]
    size = flats[0].size
    block = max(1, _STACK_BYTES // (len(flats) * dtype.itemsize))
    buffer = np.empty((len(flats), min(block, size)), dtype=dtype)
    for lo in range(0, size, block):
        hi = min(lo + block, size)
        stack = buffer[:, : hi - lo]
        for row, flat in zip(stack, flats, strict=True):
            row[...] = flat[lo:hi]
        yield lo, hi, stack


def _coordinatewise(
    updates: Sequence[Arrays], reduce: Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """Apply ``reduce`` (stack of shape ``(n, b)``, may be overwritten, to ``(b,)``) to every coordinate."""
    checked = check_updates(updates)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, first in checked[0].items():
        dtype = accumulator_dtype(first.dtype)
        result = np.empty(first.size, dtype=dtype)
        for lo, hi, stack in _column_blocks(checked, name, dtype):
            result[lo:hi] = reduce(stack)
        out[name] = cast_back(result, first.dtype).reshape(first.shape)
    return out


def coordinate_median(updates: Sequence[Arrays]) -> dict[str, npt.NDArray[Any]]:
    """Coordinate-wise median of client models (Yin et al., ICML 2018).

    Parameters
    ----------
    updates : Sequence[Arrays]
        Client models with the same array names, shapes and dtypes.

    Returns
    -------
    dict[str, numpy.ndarray]
        Per coordinate, the middle value (odd ``n``) or the mean of the two middle values (even ``n``), in
        each array's dtype (integer and bool arrays rounded to nearest, ties to even).

    Raises
    ------
    AggregationError
        If there are no updates or they do not match each other.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([1.0, 9.0])}, {"w": np.array([2.0, -5.0])}, {"w": np.array([100.0, 0.0])}]
    >>> coordinate_median(ups)["w"]
    array([2., 0.])
    """

    def median(stack: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.asarray(np.median(stack, axis=0, overwrite_input=True))

    return _coordinatewise(updates, median)


def trimmed_mean(updates: Sequence[Arrays], *, trim_fraction: float) -> dict[str, npt.NDArray[Any]]:
    """Coordinate-wise trimmed mean of client models (Yin et al., ICML 2018).

    Parameters
    ----------
    updates : Sequence[Arrays]
        Client models with the same array names, shapes and dtypes.
    trim_fraction : float
        The paper's beta, in ``[0, 0.5)``: ``k = floor(trim_fraction * n)`` values are dropped from each end
        of every coordinate, and the remaining ``n - 2k`` (at least one) are averaged.

    Returns
    -------
    dict[str, numpy.ndarray]
        The trimmed mean, in each array's dtype (integer and bool arrays rounded to nearest).

    Raises
    ------
    AggregationError
        If there are no updates, they do not match each other, or ``trim_fraction`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([v])} for v in (1.0, 2.0, 3.0, 4.0, 1000.0)]
    >>> trimmed_mean(ups, trim_fraction=0.2)["w"]
    array([3.])
    """
    if isinstance(trim_fraction, bool) or not isinstance(trim_fraction, int | float | np.floating):
        raise AggregationError(
            f"trim_fraction: expected a number in [0, 0.5), got {type(trim_fraction).__name__}"
        )
    beta = float(trim_fraction)
    if not 0.0 <= beta < 0.5:
        raise AggregationError(f"trim_fraction: expected a number in [0, 0.5), got {beta!r}")

    def trimmed(stack: npt.NDArray[Any]) -> npt.NDArray[Any]:
        # beta < 0.5 gives trim < n / 2, so at least one value per coordinate survives.
        trim = math.floor(beta * stack.shape[0])
        stack.sort(axis=0)
        kept = stack[trim : stack.shape[0] - trim]
        # Summing the sorted survivors in order makes the result independent of the clients' order.
        total: npt.NDArray[Any] = np.add.reduce(kept, axis=0)
        return np.asarray(np.divide(total, stack.dtype.type(kept.shape[0])))

    return _coordinatewise(updates, trimmed)


def _check_num_byzantine(num_byzantine: int, n: int) -> int:
    """Check ``num_byzantine`` and Krum's condition ``n > 2f + 2``; return ``f``."""
    if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int | np.integer):
        raise AggregationError(
            f"num_byzantine: expected an int >= 0, got {type(num_byzantine).__name__}"
        )
    f = int(num_byzantine)
    if f < 0:
        raise AggregationError(f"num_byzantine: expected an int >= 0, got {f}")
    if n <= 2 * f + 2:
        raise AggregationError(
            f"Krum with num_byzantine={f} needs n > 2f + 2: expected more than {2 * f + 2} updates, "
            f"got {n}; lower num_byzantine or wait for more updates"
        )
    return f


def _squared_distances(updates: list[dict[str, npt.NDArray[Any]]]) -> npt.NDArray[np.float64]:
    """Matrix of squared Euclidean distances between the updates over all their arrays."""
    n = len(updates)
    gram = np.zeros((n, n), dtype=np.float64)
    for name in updates[0]:
        for _, _, stack in _column_blocks(updates, name, np.dtype(np.float64)):
            stack -= stack.mean(axis=0)
            gram += stack @ stack.T
    norms = np.diag(gram).copy()
    distances = norms[:, None] + norms[None, :] - 2.0 * gram
    distances = 0.5 * (distances + distances.T)
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def _scores(checked: list[dict[str, npt.NDArray[Any]]], f: int) -> npt.NDArray[np.float64]:
    """Krum scores of already checked updates."""
    n = len(checked)
    distances = _squared_distances(checked)
    np.fill_diagonal(distances, np.inf)
    distances.sort(axis=1)
    return np.asarray(distances[:, : n - f - 2].sum(axis=1), dtype=np.float64)


def krum_scores(updates: Sequence[Arrays], *, num_byzantine: int) -> npt.NDArray[np.float64]:
    """Krum score of every update (Blanchard et al., NeurIPS 2017).

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client models with the same array names, shapes and dtypes.
    num_byzantine : int
        ``f``, the most updates assumed Byzantine; Krum needs ``n > 2f + 2``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, float64: for each update, the sum of its squared distances (over the whole model)
        to its ``n - f - 2`` nearest other updates. Lower is more central.

    Raises
    ------
    AggregationError
        If the updates are invalid, ``num_byzantine`` is not an int >= 0, or ``n <= 2f + 2``.
    """
    checked = check_updates(updates)
    f = _check_num_byzantine(num_byzantine, len(checked))
    return _scores(checked, f)


def krum(updates: Sequence[Arrays], *, num_byzantine: int) -> int:
    """Index of the update Krum selects: the lowest :func:`krum_scores`, ties to the lowest index.

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client models with the same array names, shapes and dtypes.
    num_byzantine : int
        ``f``, the most updates assumed Byzantine; needs ``n > 2f + 2``.

    Returns
    -------
    int
        The selected update's position in ``updates``.

    Raises
    ------
    AggregationError
        As :func:`krum_scores`.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([v])} for v in (0.0, 0.1, -0.1, 0.05, 50.0)]
    >>> krum(ups, num_byzantine=1)  # 0.05 is nearest its two nearest neighbours, 0.0 and 0.1
    3
    """
    return int(np.argmin(krum_scores(updates, num_byzantine=num_byzantine)))


def multi_krum(
    updates: Sequence[Arrays],
    weights: Sequence[float],
    *,
    num_byzantine: int,
    num_selected: int,
) -> tuple[dict[str, npt.NDArray[Any]], list[int]]:
    """Multi-Krum: the weighted mean of the ``num_selected`` lowest-scoring updates (Blanchard et al., 2017).

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client models with the same array names, shapes and dtypes.
    weights : Sequence[float]
        One weight per update, as for :func:`~fedra.aggregation.weighted_mean`.
    num_byzantine : int
        ``f``, the most updates assumed Byzantine; needs ``n > 2f + 2``.
    num_selected : int
        ``m``, how many updates to average, in ``[1, n - f]``; ``m = 1`` is Krum.

    Returns
    -------
    tuple[dict[str, numpy.ndarray], list[int]]
        The weighted mean of the selected updates, and their indices from lowest score to highest (ties
        to the lower index); the mean folds them in that order.

    Raises
    ------
    AggregationError
        As :func:`krum_scores`; also if the weights are invalid, ``num_selected`` is out of range, or the
        selected updates' weights are all 0.
    """
    checked = check_updates(updates)
    n = len(checked)
    ws = check_weights(weights, n)
    f = _check_num_byzantine(num_byzantine, n)
    if isinstance(num_selected, bool) or not isinstance(num_selected, int | np.integer):
        raise AggregationError(
            f"num_selected: expected an int in [1, {n - f}], got {type(num_selected).__name__}"
        )
    m = int(num_selected)
    if not 1 <= m <= n - f:
        raise AggregationError(f"num_selected: expected an int in [1, {n - f}], got {m}")
    order = np.argsort(_scores(checked, f), kind="stable")
    selected = [int(i) for i in order[:m]]
    chosen = [ws[i] for i in selected]
    if not any(chosen):
        raise AggregationError(
            f"selected updates {selected}: expected a positive total weight, got 0.0"
        )
    return weighted_mean([checked[i] for i in selected], chosen), selected
