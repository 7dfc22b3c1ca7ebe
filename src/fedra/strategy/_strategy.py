"""A strategy: a client sampler, an aggregator and a server optimizer, composed.

A strategy is a pure policy. It owns no loop, no I/O and no mutable fields: every method takes the
current :class:`StrategyState` and returns a new one. The round driver owns the loop, the logging and the
state, and hands the state to the checkpoint after each round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import final

import numpy as np

from fedra.strategy._aggregator import Aggregator, RoundAggregate
from fedra.strategy._optimizer import ServerOptimizer
from fedra.strategy._sampler import FractionSampler
from fedra.strategy._state import StrategyState

__all__ = ["Strategy"]

Arrays = Mapping[str, np.ndarray]


@final
@dataclass(frozen=True, slots=True)
class Strategy:
    """Sampler + aggregator + server optimizer.

    Examples
    --------
    FedAdam over the coordinate-wise median of half the clients::

        Strategy(sampler=FractionSampler(0.5), aggregator=Aggregator("median"),
                 optimizer=ServerOptimizer("fedadam", lr=0.01))
    """

    sampler: FractionSampler = field(default_factory=FractionSampler)
    aggregator: Aggregator = field(default_factory=Aggregator)
    optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)

    def init_state(self, params: Arrays, *, seed: int) -> StrategyState:
        return StrategyState.initial(seed=seed, moments=self.optimizer.init(params))

    def sample(self, state: StrategyState, available: Sequence[str]) -> tuple[list[str], StrategyState]:
        rng = state.generator()
        chosen = self.sampler.sample(available, rng)
        return chosen, state.advanced(rng=rng)

    def start_round(self, params: Arrays) -> RoundAggregate:
        return self.aggregator.start(params)

    def update(self, state: StrategyState, params: Arrays, aggregate: Arrays
               ) -> tuple[dict[str, np.ndarray], StrategyState]:
        """The next global model from this round's aggregate, and the state after the round."""
        new_params, moments = self.optimizer.step(params, aggregate, state.moments)
        return new_params, state.advanced(moments=moments, round=state.round + 1)
