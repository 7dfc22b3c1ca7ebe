"""Strategy state: exact save/restore, and sampling that depends only on the state."""

from __future__ import annotations

import numpy as np
import pytest

from fedra.errors import AggregationError, ConfigError, StateError
from fedra.strategy import FractionSampler, ServerOptimizer, Strategy, StrategyState

PARAMS = {"w": np.ones((4, 3), np.float32), "b": np.zeros(3, np.float64), "steps": np.zeros((), np.int64)}


@pytest.mark.parametrize("kind", ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_state_round_trips_exactly_and_continues_identically(kind: str) -> None:
    strategy = Strategy(sampler=FractionSampler(0.3), optimizer=ServerOptimizer(kind, lr=0.1))  # type: ignore[arg-type]
    state = strategy.init_state(PARAMS, seed=3)
    clients = [f"c{i}" for i in range(20)]
    params = PARAMS
    for _ in range(3):
        _, state = strategy.sample(state, clients)
        agg = {k: (v + 1).astype(v.dtype) for k, v in params.items()}
        params, state = strategy.update(state, params, agg)
    restored = StrategyState.from_bytes(bytes(state.to_bytes()))
    assert restored == state
    a, _ = strategy.sample(state, clients)
    b, _ = strategy.sample(restored, clients)
    assert a == b
    for k in state.moments:
        assert restored.moments[k].dtype == state.moments[k].dtype


def test_moments_exist_only_for_float_arrays_and_only_when_needed() -> None:
    assert ServerOptimizer("fedavg").init(PARAMS) == {}
    assert set(ServerOptimizer("fedavgm").init(PARAMS)) == {"momentum/w", "momentum/b"}
    assert set(ServerOptimizer("fedadam").init(PARAMS)) == {"m/w", "m/b", "v/w", "v/b"}


def test_integer_arrays_take_the_aggregate_under_every_optimizer() -> None:
    for kind in ("fedavgm", "fedadam", "fedyogi", "fedadagrad"):
        opt = ServerOptimizer(kind, lr=0.5)  # type: ignore[arg-type]
        new, _ = opt.step(PARAMS, {**PARAMS, "steps": np.array(5, np.int64)}, opt.init(PARAMS))
        assert new["steps"] == 5 and new["steps"].dtype == np.int64
        assert new["w"].dtype == np.float32


def test_fedavg_with_server_lr_moves_part_of_the_way() -> None:
    agg = {"w": np.full((4, 3), 3.0, np.float32), "b": np.ones(3), "steps": np.array(1, np.int64)}
    new, _ = ServerOptimizer("fedavg", lr=0.5).step(PARAMS, agg, {})
    np.testing.assert_allclose(new["w"], 2.0)  # 1 + 0.5 * (3 - 1)
    new, _ = ServerOptimizer("fedavg").step(PARAMS, agg, {})
    np.testing.assert_array_equal(new["w"], agg["w"])


def test_sampler_sizes_and_determinism() -> None:
    s = FractionSampler(fraction=0.1, min_clients=3)
    assert s.size(100) == 10 and s.size(10) == 3 and s.size(2) == 2
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(1)
    clients = [f"c{i:03d}" for i in range(100)]
    a = s.sample(clients, rng1)
    assert a == s.sample(list(reversed(clients)), rng2), "order of availability must not matter"
    assert len(set(a)) == 10 and a == sorted(a)
    with pytest.raises(AggregationError, match="expected at least 3 available clients, got 2"):
        s.sample(["x", "y"], rng1)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_fraction_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="expected 0 < fraction <= 1"):
        FractionSampler(fraction=bad)


def test_garbage_state_is_a_state_error() -> None:
    with pytest.raises(StateError, match="cannot restore strategy state"):
        StrategyState.from_bytes(b"\x00" * 20)


def test_strategy_classes_are_final_and_frozen() -> None:
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        Strategy().sampler = FractionSampler()  # type: ignore[misc]
    for klass in (Strategy, FractionSampler, ServerOptimizer):
        assert getattr(klass, "__final__", False)
