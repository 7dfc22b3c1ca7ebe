"""Strategies: composable policies (sampler + aggregator + server optimizer) with explicit state.

Anomaly detection (:mod:`~fedra.strategy._anomaly`): a :class:`QuarantinePolicy` scores each round's
updates and keeps a per-client :class:`ReputationState`; repeat offenders are quarantined, each decision a
:class:`QuarantineEvent`, and :func:`quarantine_report` counts true and false quarantines.
"""

from fedra.strategy._aggregator import AGGREGATORS, Aggregator, RoundAggregate
from fedra.strategy._anomaly import (
    QuarantineEvent,
    QuarantinePolicy,
    QuarantineReport,
    ReputationState,
    quarantine_report,
)
from fedra.strategy._optimizer import OPTIMIZERS, ServerOptimizer
from fedra.strategy._sampler import FractionSampler
from fedra.strategy._state import StrategyState
from fedra.strategy._strategy import Strategy

__all__ = [
    "AGGREGATORS",
    "OPTIMIZERS",
    "Aggregator",
    "FractionSampler",
    "QuarantineEvent",
    "QuarantinePolicy",
    "QuarantineReport",
    "ReputationState",
    "RoundAggregate",
    "ServerOptimizer",
    "Strategy",
    "StrategyState",
    "quarantine_report",
]
