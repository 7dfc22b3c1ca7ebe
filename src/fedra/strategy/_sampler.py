"""Client samplers: which of the available clients take part in a round."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import numpy as np

from fedra.errors import AggregationError, ConfigError

__all__ = ["FractionSampler"]


@final
@dataclass(frozen=True, slots=True)
class FractionSampler:
    """Sample ``ceil(fraction * available)`` clients (at least ``min_clients``) uniformly without replacement.

    With ``poisson=True`` each available client takes part independently with probability ``fraction``
    instead (Poisson sampling, the sampling DP-FedAvg's privacy amplification assumes; McMahan et al.
    2018): the cohort's size varies from round to round and may be zero.

    The result keeps the order of ``available`` after sorting, so the same generator state and the same
    available set always give the same list in the same order.
    """

    fraction: float = 1.0
    min_clients: int = 1
    poisson: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"sampling fraction: expected 0 < fraction <= 1, got {self.fraction}")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients: expected at least 1, got {self.min_clients}")

    def size(self, num_available: int) -> int:
        return min(num_available, max(self.min_clients, math.ceil(self.fraction * num_available - 1e-9)))

    def sample(self, available: Sequence[str], rng: np.random.Generator) -> list[str]:
        pool = sorted(available)
        if len(pool) < self.min_clients:
            raise AggregationError(
                f"cannot start a round: expected at least {self.min_clients} available clients, "
                f"got {len(pool)}; wait for more clients or lower min_clients"
            )
        if self.poisson:
            # one draw per client, always, so the generator advances the same whatever is chosen
            keep = rng.random(len(pool)) < self.fraction
            return [name for name, chosen in zip(pool, keep, strict=True) if chosen]
        k = self.size(len(pool))
        if k == len(pool):
            return pool
        chosen = np.sort(rng.choice(len(pool), size=k, replace=False))
        return [pool[i] for i in chosen]
