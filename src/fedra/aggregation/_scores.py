"""Anomaly scores of one round's updates: norm, cosine to the aggregate, distance to peers, robust z-scores.

What a detector looks at, per update and per round, as pure functions; what to do about the scores over
many rounds (reputation, quarantine) is a policy and lives in :mod:`fedra.strategy`.

- The L2 norm of the update: scaling and model-replacement attacks (Bagdasaryan et al., AISTATS 2020) blow
  it up; norm bounding (Sun et al., 2019) acts on it.
- The cosine similarity to the round's aggregate: sign flipping and inner-product manipulation (Xie et al.,
  UAI 2019) point away from it; FLTrust (Cao et al., NDSS 2021) weighs updates by a cosine.
- The mean Euclidean distance to the ``k`` nearest other updates, the quantity Krum ranks by (Blanchard
  et al., NeurIPS 2017), unsquared so that it is on the scale of the updates.
- Robust z-scores, ``(x - median) / (1.4826 MAD)``, the "modified z-score" of Iglewicz and Hoaglin ("How to
  Detect and Handle Outliers", 1993): the median and the MAD ignore the outliers they are used to find.

All scores are over the whole update (every array passed), in float64. Pass updates, not models: the
norm and the cosine of a model mean nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

from fedra.aggregation._defences import check_reference, flat64
from fedra.aggregation._mean import Arrays, check_updates
from fedra.aggregation._robust import _squared_distances
from fedra.errors import AggregationError

__all__ = ["UpdateScores", "robust_zscores", "update_scores"]

#: Makes the MAD a consistent estimate of the standard deviation of normal data.
MAD_TO_SIGMA: Final = 1.4826
#: Makes the mean absolute deviation a consistent estimate of the standard deviation (sqrt(pi / 2)).
_MEAN_AD_TO_SIGMA: Final = 1.2533


@final
@dataclass(frozen=True, slots=True)
class UpdateScores:
    """The anomaly scores of one round's ``n`` updates, each an array of shape ``(n,)`` in update order.

    Parameters
    ----------
    norm : numpy.ndarray
        L2 norm of each update.
    cosine : numpy.ndarray
        Cosine similarity of each update to the aggregate, in ``[-1, 1]``; 0 where either is zero.
    peer_distance : numpy.ndarray
        Mean Euclidean distance of each update to its ``k`` nearest other updates (0 when alone).
    """

    norm: npt.NDArray[np.float64]
    cosine: npt.NDArray[np.float64]
    peer_distance: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.norm.shape[0])

    def row(self, index: int) -> dict[str, float]:
        """The three scores of update ``index``, as plain floats (for events and metrics)."""
        return {
            "norm": float(self.norm[index]),
            "cosine": float(self.cosine[index]),
            "peer_distance": float(self.peer_distance[index]),
        }


def update_scores(
    updates: Sequence[Arrays], *, aggregate: Arrays, num_neighbours: int
) -> UpdateScores:
    """Score every update of a round: norm, cosine to the aggregate, distance to its nearest peers.

    Parameters
    ----------
    updates : Sequence[Arrays]
        ``n`` client updates (model minus global model) with the same array names, shapes and dtypes.
    aggregate : Arrays
        The round's aggregate update, shaped like an update (from whichever rule the strategy uses).
    num_neighbours : int
        ``k``, how many nearest other updates the peer distance averages over, >= 1; clipped to ``n - 1``.
        Krum's choice is ``n - f - 2`` for ``f`` expected attackers.

    Returns
    -------
    UpdateScores
        Norms, cosines to the aggregate and mean distances to the ``k`` nearest peers, in update order.

    Raises
    ------
    AggregationError
        If the updates or the aggregate are invalid, or ``num_neighbours`` is not an int >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> ups = [{"w": np.array([1.0, 0.0])}, {"w": np.array([0.0, 2.0])}, {"w": np.array([-3.0, 0.0])}]
    >>> s = update_scores(ups, aggregate={"w": np.array([1.0, 0.0])}, num_neighbours=1)
    >>> s.norm, s.cosine, s.peer_distance.round(3)
    (array([1., 2., 3.]), array([ 1.,  0., -1.]), array([2.236, 2.236, 3.606]))
    """
    checked = check_updates(updates)
    agg = flat64(check_reference(aggregate, checked[0], what="aggregate"))
    if isinstance(num_neighbours, bool) or not isinstance(num_neighbours, int | np.integer):
        raise AggregationError(
            f"num_neighbours: expected an int >= 1, got {type(num_neighbours).__name__}"
        )
    if num_neighbours < 1:
        raise AggregationError(f"num_neighbours: expected an int >= 1, got {int(num_neighbours)}")
    n = len(checked)
    xs = np.stack([flat64(u) for u in checked])
    norms = np.sqrt(np.einsum("ij,ij->i", xs, xs))
    agg_norm = float(np.sqrt(agg @ agg))
    denominator = norms * agg_norm
    cosine = np.divide(xs @ agg, denominator, out=np.zeros(n), where=denominator > 0)
    np.clip(cosine, -1.0, 1.0, out=cosine)
    k = min(int(num_neighbours), n - 1)
    if k == 0:
        peer = np.zeros(n)
    else:
        distances = np.sqrt(_squared_distances(checked))
        np.fill_diagonal(distances, np.inf)
        distances.sort(axis=1)
        peer = distances[:, :k].mean(axis=1)
    return UpdateScores(
        norm=np.asarray(norms, dtype=np.float64),
        cosine=np.asarray(cosine, dtype=np.float64),
        peer_distance=np.asarray(peer, dtype=np.float64),
    )


def robust_zscores(values: npt.ArrayLike, *, min_scale: float = 0.0) -> npt.NDArray[np.float64]:
    """Modified z-scores ``(x - median) / (1.4826 MAD)`` (Iglewicz and Hoaglin, 1993).

    Parameters
    ----------
    values : array_like
        One score per update, shape ``(n,)``, finite.
    min_scale : float
        A floor on the scale (>= 0), so that nearly identical values do not turn tiny differences into
        huge z-scores.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, float64. When more than half the values are equal (MAD 0), the scale falls back to
        the mean absolute deviation times ``sqrt(pi / 2)``; when all are equal (and ``min_scale`` is 0) every
        score is 0.

    Raises
    ------
    AggregationError
        If ``values`` is not a non-empty one-dimensional array of finite numbers, or ``min_scale`` is
        negative.

    Examples
    --------
    >>> robust_zscores([1.0, 2.0, 3.0, 4.0, 100.0]).round(2)
    array([-1.35, -0.67,  0.  ,  0.67, 65.43])
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise AggregationError(f"values: expected a non-empty 1-d array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise AggregationError("values: expected finite numbers, got NaN or Inf")
    if not min_scale >= 0.0:
        raise AggregationError(f"min_scale: expected a number >= 0, got {min_scale!r}")
    median = float(np.median(x))
    deviation = np.abs(x - median)
    scale = MAD_TO_SIGMA * float(np.median(deviation))
    if scale == 0.0:
        scale = _MEAN_AD_TO_SIGMA * float(deviation.mean())
    scale = max(scale, float(min_scale))
    if scale == 0.0:
        return np.zeros_like(x)
    with np.errstate(over="ignore"):  # a subnormal scale: the z-scores saturate rather than overflow
        out: npt.NDArray[Any] = (x - median) / scale
    big = np.finfo(np.float64).max
    return np.asarray(np.clip(out, -big, big), dtype=np.float64)
