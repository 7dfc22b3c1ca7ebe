"""A strategy: a client sampler, an aggregator and a server optimizer, composed.

A strategy is a pure policy. It owns no loop, no I/O and no mutable fields: every method takes the
current :class:`StrategyState` and returns a new one. The round driver owns the loop, the logging and the
state, and hands the state to the checkpoint after each round.

Centered clipping's center (the previous round's aggregate delta, the paper's momentum) is state like the
optimizer's moments: it lives in :attr:`StrategyState.moments` under ``"center/<param>"``, so it is
checkpointed and restored with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import final

import numpy as np

from fedra.strategy._aggregator import Aggregator, RoundAggregate, delta
from fedra.strategy._optimizer import ServerOptimizer
from fedra.strategy._sampler import FractionSampler
from fedra.strategy._state import StrategyState

__all__ = ["Strategy"]

Arrays = Mapping[str, np.ndarray]
_CENTER = "center/"


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

    def start_round(self, params: Arrays, state: StrategyState | None = None) -> RoundAggregate:
        """A round's aggregation from the global model ``params`` (``state`` holds centered clipping's center)."""
        center = None
        if self.aggregator.kind == "centered_clip" and state is not None:
            found = {k[len(_CENTER):]: v for k, v in state.moments.items() if k.startswith(_CENTER)}
            center = found if found.keys() == params.keys() else None  # none yet: start from zero
        return self.aggregator.start(params, center=center)

    def update(self, state: StrategyState, params: Arrays, aggregate: Arrays
               ) -> tuple[dict[str, np.ndarray], StrategyState]:
        """The next global model from this round's aggregate, and the state after the round."""
        own = {k: v for k, v in state.moments.items() if not k.startswith(_CENTER)}
        new_params, moments = self.optimizer.step(params, aggregate, own)
        if self.aggregator.kind == "centered_clip":
            moments = {**moments, **{_CENTER + k: v for k, v in delta(aggregate, params).items()}}
        return new_params, state.advanced(moments=moments, round=state.round + 1)
