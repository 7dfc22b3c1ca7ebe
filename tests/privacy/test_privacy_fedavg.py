"""DPFedAvg: the round order a driver follows (clip, sum, release, charge), the budget stop, resume."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedra.errors import ConfigError, StateError
from fedra.privacy import (
    Accountant,
    AdaptiveClipping,
    DPConfig,
    DPFedAvg,
    adaptive_noise_multiplier,
    sum_updates,
)


def run_round(dp: DPFedAvg, updates: list[dict[str, npt.NDArray[Any]]],
              rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
    """What the driver does: prepare each reply, sum, count the unclipped, finish."""
    prepared = [dp.prepare(update) for update in updates]
    summed = sum_updates([clipped for clipped, _ in prepared])
    unclipped = sum(1 for _, within in prepared if within)
    return dp.finish_round(summed, received=len(updates), unclipped_count=unclipped, rng=rng)


def synthetic_updates(rng: np.random.Generator, n: int, size: int = 1000, scale: float = 1.0) -> list[dict[str, Any]]:
    return [{"w": (rng.standard_normal(size) * scale / np.sqrt(size)).astype(np.float32)} for _ in range(n)]


def test_server_mode_noise_denominator_and_accounting() -> None:
    config = DPConfig(clip_norm=0.5, delta=1e-5, noise_multiplier=1.2)
    dp = DPFedAvg(config, rounds=10, population=1000, sampling_rate=0.02)
    assert dp.expected_clients == pytest.approx(20.0)
    rng = np.random.default_rng(0)
    zero = [{"w": np.zeros(500_000, dtype=np.float32)} for _ in range(17)]  # fewer arrived than expected
    mean = run_round(dp, zero, rng)
    assert mean["w"].dtype == np.float64  # the dtype of the sum (sum_updates sums in float64)
    assert abs(mean["w"].astype(np.float64).std() / (1.2 * 0.5 / 20.0) - 1) < 0.01
    for _ in range(4):
        run_round(dp, synthetic_updates(rng, 20), rng)
    reference = Accountant()
    reference.step(noise_multiplier=1.2, sampling_rate=0.02, count=5)
    assert dp.accountant.steps == 5
    assert dp.epsilon() == reference.epsilon(1e-5)
    assert dp.spent() == (reference.epsilon(1e-5), 1e-5)


def test_clipping_happens_before_summing() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=0.0)
    dp = DPFedAvg(config, rounds=1, population=10, clients_per_round=2, )
    updates = [{"w": np.array([30.0, 40.0])}, {"w": np.array([0.3, 0.4])}]
    mean = run_round(dp, updates, np.random.default_rng(0))
    np.testing.assert_allclose(mean["w"], [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2])
    assert dp.epsilon() == float("inf")


def test_adaptive_clipping_tracks_the_quantile_and_splits_the_noise() -> None:
    config = DPConfig(clip_norm=0.05, delta=1e-5, noise_multiplier=1.0,
                      adaptive=AdaptiveClipping(target_quantile=0.5, learning_rate=0.2))
    dp = DPFedAvg(config, rounds=300, population=10_000, clients_per_round=100)
    assert dp.update_noise_multiplier == adaptive_noise_multiplier(noise_multiplier=1.0, count_stddev=5.0)
    rng = np.random.default_rng(4)
    for _ in range(300):
        norms = rng.lognormal(0.0, 0.3, size=100)
        updates = [{"w": np.array([n, 0.0])} for n in norms]
        run_round(dp, updates, rng)
    assert dp.clip_norm == pytest.approx(1.0, rel=0.15)  # the median of lognormal(0, 0.3) is 1
    assert dp.task_config() == {"clip_norm": dp.clip_norm}


def test_the_job_stops_before_max_epsilon() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=1.5, max_epsilon=3.0)
    dp = DPFedAvg(config, rounds=10_000, population=100, clients_per_round=10)
    rng = np.random.default_rng(1)
    rounds = 0
    while dp.can_run_round():
        run_round(dp, synthetic_updates(rng, 10, size=10), rng)
        rounds += 1
    assert rounds > 0
    assert dp.epsilon() <= 3.0
    assert dp.accountant.epsilon_after(1e-5, noise_multiplier=1.5, clients_per_round=10) > 3.0


def test_target_epsilon_calibrates_the_noise_for_the_job() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, target_epsilon=2.0, sampling="fixed")
    dp = DPFedAvg(config, rounds=20, population=500, clients_per_round=25)
    rng = np.random.default_rng(2)
    for _ in range(20):
        run_round(dp, synthetic_updates(rng, 25, size=10), rng)
    assert dp.epsilon() <= 2.0
    assert dp.accountant.sampling == "fixed"


def test_a_resumed_job_continues_bit_for_bit() -> None:
    config = DPConfig(clip_norm=0.3, delta=1e-5, noise_multiplier=1.1, adaptive=AdaptiveClipping())
    data_rng = np.random.default_rng(9)
    batches = [synthetic_updates(data_rng, 30, size=50) for _ in range(8)]

    straight = DPFedAvg(config, rounds=8, population=600, sampling_rate=0.05)
    rng = np.random.default_rng(5)
    straight_means = [run_round(straight, batch, rng) for batch in batches]

    first = DPFedAvg(config, rounds=8, population=600, sampling_rate=0.05)
    rng = np.random.default_rng(5)
    resumed_means = [run_round(first, batch, rng) for batch in batches[:3]]
    state, rng_state = first.state_bytes(), rng.bit_generator.state  # the driver checkpoints both
    second = DPFedAvg(config, rounds=8, population=600, sampling_rate=0.05)
    second.load_state(state)
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    resumed_means += [run_round(second, batch, rng) for batch in batches[3:]]

    for a, b in zip(straight_means, resumed_means, strict=True):
        np.testing.assert_array_equal(a["w"], b["w"])
    assert second.clip_norm == straight.clip_norm
    assert second.epsilon() == straight.epsilon()
    assert second.accountant.steps == 8


def test_load_state_refuses_another_job_or_garbage() -> None:
    one = DPFedAvg(DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=1.0), rounds=5, population=100,
                   clients_per_round=10)
    other = DPFedAvg(DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=2.0), rounds=5, population=100,
                     clients_per_round=10)
    with pytest.raises(StateError, match="noise_multiplier"):
        other.load_state(one.state_bytes())
    with pytest.raises(StateError, match="DP state"):
        one.load_state(b"{}")


def test_local_mode_passes_noised_updates_through_and_charges_the_local_ledger() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=2.0, mode="local")
    dp = DPFedAvg(config, rounds=3, population=100, clients_per_round=10)
    assert dp.task_config() == {"clip_norm": 1.0, "noise_multiplier": 2.0}
    updates = [{"w": np.array([5.0, 5.0])}, {"w": np.array([1.0, 3.0])}]  # as the clients sent them
    mean = run_round(dp, updates, np.random.default_rng(0))
    np.testing.assert_allclose(mean["w"], [3.0, 4.0])
    reference = Accountant(sampling="full")
    reference.step(noise_multiplier=1.0)
    assert dp.epsilon() == reference.epsilon(1e-5)


def test_sampling_arguments_are_checked() -> None:
    config = DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=1.0, sampling="fixed")
    with pytest.raises(ConfigError, match="clients_per_round"):
        DPFedAvg(config, rounds=5, population=100, sampling_rate=0.1)
    with pytest.raises(ConfigError, match="exactly one of"):
        DPFedAvg(DPConfig(clip_norm=1.0, delta=1e-5, noise_multiplier=1.0), rounds=5, population=100)
    with pytest.raises(ConfigError, match="population"):
        DPFedAvg(config, rounds=5, population=0, clients_per_round=1)
