"""Aggregators: a named choice of the pure functions in :mod:`fedra.aggregation`, run over one round.

The driver feeds a round's updates, in task order, into the :class:`RoundAggregate` that
:meth:`Aggregator.start` returns. The mean folds each update into a running sum as it arrives (the
server holds the sum and the few updates in flight, never all of them); the robust aggregators need every
update at once and keep them until :meth:`RoundAggregate.finish`.

Centered clipping, norm bounding and FLTrust act on deltas (each model minus the round's global model,
which is the ``template`` the round starts from): the round subtracts the global model, applies the pure
function and adds the global model back, so the strategy receives a model as from every other rule.
Centered clipping starts from a ``center`` delta (the previous round's aggregate delta, kept in the
:class:`~fedra.strategy.StrategyState`); FLTrust needs the server's own model trained on its root dataset
(``server_model``), which the driver obtains from its root trainer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, final

import numpy as np

from fedra import aggregation as agg
from fedra.errors import AggregationError, ConfigError

__all__ = ["AGGREGATORS", "DELTA_AGGREGATORS", "Aggregator", "RoundAggregate", "delta", "zero_delta"]

AggregatorKind = Literal["mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "centered_clip",
                         "norm_bound", "fltrust"]
AGGREGATORS: tuple[str, ...] = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan",
                                "centered_clip", "norm_bound", "fltrust")
#: the aggregators that act on deltas (model minus global model) rather than on models
DELTA_AGGREGATORS: tuple[str, ...] = ("centered_clip", "norm_bound", "fltrust")
Arrays = Mapping[str, np.ndarray]


@final
@dataclass(frozen=True, slots=True)
class Aggregator:
    """Which aggregation rule a strategy uses, with its parameters."""

    kind: AggregatorKind = "mean"
    trim_fraction: float = 0.1
    num_byzantine: int = 0
    num_selected: int | None = None
    #: how many arrived updates the mean folds at once (memory-bandwidth efficiency vs. memory held).
    fold_batch: int = 16
    #: ... and at most how many bytes of them: a large model is folded as soon as it arrives, so the
    #: server never holds many updates for the sake of batching (batching gains ~3%, BENCHMARKS.md).
    fold_bytes: int = 16 << 20
    #: norm_bound: the largest L2 norm of a delta let through (Sun et al. 2019)
    max_norm: float = 1.0
    #: centered_clip: the clipping radius tau and the number of clipping steps (Karimireddy et al. 2021)
    clip_tau: float = 1.0
    clip_iterations: int = 1

    def __post_init__(self) -> None:
        if self.kind not in AGGREGATORS:
            raise ConfigError(f"aggregator: expected one of {', '.join(AGGREGATORS)}, got {self.kind!r}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"trim_fraction: expected 0 <= trim_fraction < 0.5, got {self.trim_fraction}")
        if self.num_byzantine < 0:
            raise ConfigError(f"num_byzantine: expected >= 0, got {self.num_byzantine}")
        if self.fold_batch < 1:
            raise ConfigError(f"fold_batch: expected >= 1, got {self.fold_batch}")
        if self.fold_bytes < 0:
            raise ConfigError(f"fold_bytes: expected >= 0, got {self.fold_bytes}")
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ConfigError(f"max_norm: expected a finite number > 0, got {self.max_norm}")
        if not (math.isfinite(self.clip_tau) and self.clip_tau > 0):
            raise ConfigError(f"clip_tau: expected a finite number > 0, got {self.clip_tau}")
        if self.clip_iterations < 1:
            raise ConfigError(f"clip_iterations: expected >= 1, got {self.clip_iterations}")

    @property
    def streaming(self) -> bool:
        return self.kind == "mean"

    @property
    def on_deltas(self) -> bool:
        """Whether the rule acts on deltas (model minus global model) rather than on models."""
        return self.kind in DELTA_AGGREGATORS

    def start(self, template: Arrays, *, center: Arrays | None = None) -> RoundAggregate:
        """A round starting from the global model ``template``; ``center`` is centered clipping's."""
        return RoundAggregate(self, template, center=center)


@final
class RoundAggregate:
    """One round's aggregation in progress. Feed updates in a fixed order for bit-identical results."""

    def __init__(self, policy: Aggregator, template: Arrays, *, center: Arrays | None = None) -> None:
        self._policy = policy
        self._global = template
        self._center = center
        self._acc = agg.WeightedMeanAccumulator(template) if policy.streaming else None
        self._pending: list[tuple[Arrays, float]] = []
        self._pending_bytes = 0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, arrays: Arrays, weight: float) -> None:
        self._pending.append((arrays, float(weight)))
        self._count += 1
        if self._acc is None:
            return
        self._pending_bytes += sum(int(getattr(a, "nbytes", 0)) for a in arrays.values())
        if len(self._pending) >= self._policy.fold_batch or self._pending_bytes >= self._policy.fold_bytes:
            self._flush()

    def _flush(self) -> None:
        assert self._acc is not None
        if self._pending:
            self._acc.add_many(self._pending)
            self._pending = []
            self._pending_bytes = 0

    def finish(self, *, server_model: Arrays | None = None) -> dict[str, np.ndarray]:
        """The aggregate of everything added; raises :class:`AggregationError` if that is nothing.

        ``server_model`` (FLTrust only) is the global model after the server's training on its root data.
        """
        p = self._policy
        if self._acc is not None:
            self._flush()
            return self._acc.take()
        updates = [a for a, _ in self._pending]
        weights = [w for _, w in self._pending]
        self._pending = []
        if not updates:
            raise AggregationError("expected at least one update to aggregate, got none")
        if p.on_deltas:
            return self._add_global(self._on_deltas(updates, weights, server_model))
        if p.kind == "median":
            return agg.coordinate_median(updates)
        if p.kind == "trimmed_mean":
            return agg.trimmed_mean(updates, trim_fraction=p.trim_fraction)
        if p.kind == "bulyan":
            result, _ = agg.bulyan(updates, num_byzantine=p.num_byzantine)
            return result
        if p.kind == "krum":
            return {k: np.array(v) for k, v in updates[agg.krum(updates, num_byzantine=p.num_byzantine)].items()}
        selected = p.num_selected or max(1, len(updates) - p.num_byzantine)
        result, _ = agg.multi_krum(updates, weights, num_byzantine=p.num_byzantine, num_selected=selected)
        return result

    def _on_deltas(self, updates: list[Arrays], weights: list[float], server_model: Arrays | None
                   ) -> dict[str, np.ndarray]:
        p = self._policy
        deltas = [delta(u, self._global) for u in updates]
        if p.kind == "norm_bound":
            return agg.weighted_mean(agg.norm_bound(deltas, max_norm=p.max_norm), weights)
        if p.kind == "centered_clip":
            center = self._center if self._center is not None else zero_delta(self._global)
            return agg.centered_clip(deltas, center=center, tau=p.clip_tau, iterations=p.clip_iterations)
        if server_model is None:
            raise AggregationError("fltrust: expected the server's model trained on its root dataset, got "
                                   "none; run FLTrust through a driver with a root trainer")
        result, _ = agg.fltrust(deltas, server_update=delta(server_model, self._global))
        return result

    def _add_global(self, mean_delta: Arrays) -> dict[str, np.ndarray]:
        return {name: np.add(g, mean_delta[name], dtype=np.float64).astype(g.dtype)
                if g.dtype.kind == "f" else (g + mean_delta[name]).astype(g.dtype)
                for name, g in self._global.items()}


def delta(model: Arrays, global_model: Arrays) -> dict[str, np.ndarray]:
    """``model - global_model`` array by array, in each array's dtype."""
    return {name: np.subtract(model[name], g).astype(g.dtype, copy=False) for name, g in global_model.items()}


def zero_delta(global_model: Arrays) -> dict[str, np.ndarray]:
    """A delta of zeros shaped like ``global_model``."""
    return {name: np.zeros_like(g) for name, g in global_model.items()}
