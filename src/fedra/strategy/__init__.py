"""Strategies: composable policies (sampler + aggregator + server optimizer) with explicit state."""

from fedra.strategy._aggregator import AGGREGATORS, Aggregator, RoundAggregate
from fedra.strategy._optimizer import OPTIMIZERS, ServerOptimizer
from fedra.strategy._sampler import FractionSampler
from fedra.strategy._state import StrategyState
from fedra.strategy._strategy import Strategy

__all__ = [
    "AGGREGATORS",
    "OPTIMIZERS",
    "Aggregator",
    "FractionSampler",
    "RoundAggregate",
    "ServerOptimizer",
    "Strategy",
    "StrategyState",
]
