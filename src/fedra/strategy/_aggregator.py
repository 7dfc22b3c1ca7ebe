"""Aggregators: a named choice of the pure functions in :mod:`fedra.aggregation`, run over one round.

The driver feeds a round's updates, in task order, into the :class:`RoundAggregate` that
:meth:`Aggregator.start` returns. The mean folds each update into a running sum as it arrives (the
server holds the sum and the few updates in flight, never all of them); the robust aggregators need every
update at once and keep them until :meth:`RoundAggregate.finish`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, final

import numpy as np

from fedra import aggregation as agg
from fedra.errors import ConfigError

__all__ = ["AGGREGATORS", "Aggregator", "RoundAggregate"]

AggregatorKind = Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"]
AGGREGATORS: tuple[str, ...] = ("mean", "median", "trimmed_mean", "krum", "multi_krum")
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

    @property
    def streaming(self) -> bool:
        return self.kind == "mean"

    def start(self, template: Arrays) -> RoundAggregate:
        return RoundAggregate(self, template)


@final
class RoundAggregate:
    """One round's aggregation in progress. Feed updates in a fixed order for bit-identical results."""

    def __init__(self, policy: Aggregator, template: Arrays) -> None:
        self._policy = policy
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

    def finish(self) -> dict[str, np.ndarray]:
        """The aggregate of everything added; raises :class:`AggregationError` if that is nothing."""
        p = self._policy
        if self._acc is not None:
            self._flush()
            return self._acc.take()
        updates = [a for a, _ in self._pending]
        weights = [w for _, w in self._pending]
        self._pending = []
        if p.kind == "median":
            return agg.coordinate_median(updates)
        if p.kind == "trimmed_mean":
            return agg.trimmed_mean(updates, trim_fraction=p.trim_fraction)
        if p.kind == "krum":
            return {k: np.array(v) for k, v in updates[agg.krum(updates, num_byzantine=p.num_byzantine)].items()}
        selected = p.num_selected or max(1, len(updates) - p.num_byzantine)
        result, _ = agg.multi_krum(updates, weights, num_byzantine=p.num_byzantine, num_selected=selected)
        return result
