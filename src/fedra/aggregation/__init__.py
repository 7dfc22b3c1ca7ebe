"""Aggregation math: how client models become the next global model.

Pure numpy functions on :data:`Arrays` (one client's model, named arrays): no I/O, no logging, no state
beyond the running sum a :class:`WeightedMeanAccumulator` holds. Strategies in ``fedra.strategy`` decide
what to call and keep any state between rounds; this layer imports nothing of fedra's but
:mod:`fedra.errors`, and raises :class:`~fedra.errors.AggregationError` for arguments it cannot accept.

- Averaging (:mod:`~fedra.aggregation._mean`): :func:`weighted_mean` (FedAvg) and its streaming form
  :class:`WeightedMeanAccumulator`.
- Robust rules (:mod:`~fedra.aggregation._robust`): :func:`coordinate_median`, :func:`trimmed_mean`,
  :func:`krum_scores`, :func:`krum`, :func:`multi_krum`.
- Defences (:mod:`~fedra.aggregation._defences`): :func:`bulyan`, :func:`centered_clip`,
  :func:`norm_bound`, :func:`fltrust`.
- Anomaly scores (:mod:`~fedra.aggregation._scores`): :func:`update_scores` (norm, cosine to the
  aggregate, distance to peers) into :class:`UpdateScores`, and :func:`robust_zscores`.
- Server optimizers and FedProx (:mod:`~fedra.aggregation._optimizers`): :func:`fedavgm_step`,
  :func:`fedadagrad_step`, :func:`fedadam_step`, :func:`fedyogi_step`, :func:`initial_second_moment`,
  :func:`proximal_term_np`, :func:`proximal_gradient_np`.

Every result keeps each array's dtype: floating arrays are computed in float32 at least and cast back;
integer and bool arrays are averaged in float64 and rounded to nearest.
"""

from fedra.aggregation._defences import bulyan, centered_clip, fltrust, norm_bound
from fedra.aggregation._mean import Arrays, WeightedMeanAccumulator, weighted_mean
from fedra.aggregation._optimizers import (
    fedadagrad_step,
    fedadam_step,
    fedavgm_step,
    fedyogi_step,
    initial_second_moment,
    proximal_gradient_np,
    proximal_term_np,
)
from fedra.aggregation._robust import (
    coordinate_median,
    krum,
    krum_scores,
    multi_krum,
    trimmed_mean,
)
from fedra.aggregation._scores import UpdateScores, robust_zscores, update_scores

__all__ = [
    "Arrays",
    "UpdateScores",
    "WeightedMeanAccumulator",
    "bulyan",
    "centered_clip",
    "coordinate_median",
    "fedadagrad_step",
    "fedadam_step",
    "fedavgm_step",
    "fedyogi_step",
    "fltrust",
    "initial_second_moment",
    "krum",
    "krum_scores",
    "multi_krum",
    "norm_bound",
    "proximal_gradient_np",
    "proximal_term_np",
    "robust_zscores",
    "trimmed_mean",
    "update_scores",
    "weighted_mean",
]
