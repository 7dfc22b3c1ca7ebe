"""The accountant: golden values, independent formulas, calibration, the budget stop, and state round-trip.

Golden values and their sources:

- RDP, Poisson-sampled Gaussian, ``z = 1.5``, ``q = 0.04``, 2,250 steps, ``delta = 1e-5``: epsilon 7.329
  (the issue's figure; ``dp_accounting``'s RDP accountant, Mironov, Talwar and Zhang 2019, with the
  conversion of Canonne, Kamath and Steinke 2020, Proposition 12).
- Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, Section 3.1: ``q = 0.01``,
  ``sigma = 4``, ``T = 10,000``, ``delta = 1e-5`` gives epsilon about 1.26 with the moments accountant;
  the RDP accountant (a refinement of it) must not report more.
- The Gaussian mechanism without sampling: RDP ``alpha / (2 z^2)`` (Mironov 2017, Proposition 7),
  converted as above; and its exact privacy profile (Balle and Wang 2018, Theorem 8), e.g.
  ``z = 1``, ``epsilon = 1`` gives ``delta = 0.126936`` (also a ``dp_accounting`` PLD test value).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from fedra.errors import ConfigError, StateError
from fedra.privacy import Accountant, calibrate_noise


def rdp_gaussian_epsilon(z: float, steps: int, delta: float) -> float:
    """Independent: ``min over alpha`` of the RDP-to-DP conversion of ``steps * alpha / (2 z^2)``."""
    alpha = np.linspace(1.02, 2000.0, 400_000)
    rdp = steps * alpha / (2 * z**2)
    eps = rdp + np.log1p(-1 / alpha) - np.log(delta * alpha) / (alpha - 1)
    return float(eps.min())


def gaussian_delta(epsilon: float, z: float) -> float:
    """Exact delta(epsilon) of the Gaussian mechanism with sensitivity 1 and noise z (Balle and Wang 2018)."""
    return float(stats.norm.cdf(0.5 / z - epsilon * z) - math.exp(epsilon) * stats.norm.cdf(-0.5 / z - epsilon * z))


def test_golden_rdp_poisson_gaussian_7_329() -> None:
    accountant = Accountant(sampling="poisson", backend="rdp")
    accountant.step(noise_multiplier=1.5, sampling_rate=0.04, count=2250)
    assert accountant.epsilon(1e-5) == pytest.approx(7.329, abs=5e-4)
    assert accountant.steps == 2250


def test_steps_one_at_a_time_equal_one_step_with_a_count() -> None:
    one_by_one = Accountant()
    for _ in range(300):
        one_by_one.step(noise_multiplier=1.5, sampling_rate=0.04)
    grouped = Accountant()
    grouped.step(noise_multiplier=1.5, sampling_rate=0.04, count=300)
    assert one_by_one.epsilon(1e-5) == grouped.epsilon(1e-5)


def test_rdp_is_no_worse_than_abadi_moments_accountant() -> None:
    accountant = Accountant()
    accountant.step(noise_multiplier=4.0, sampling_rate=0.01, count=10_000)
    epsilon = accountant.epsilon(1e-5)
    assert 0.5 < epsilon <= 1.26


@pytest.mark.parametrize(("z", "steps"), [(1.0, 1), (2.0, 10), (5.0, 100)])
def test_rdp_gaussian_without_sampling_matches_alpha_over_two_sigma_squared(z: float, steps: int) -> None:
    accountant = Accountant(sampling="full")
    accountant.step(noise_multiplier=z, count=steps)
    expected = rdp_gaussian_epsilon(z, steps, 1e-5)
    # the library minimises over a finite set of orders: never below the continuous minimum, and close
    assert expected - 1e-9 <= accountant.epsilon(1e-5) <= expected * 1.01


@pytest.mark.parametrize("delta", [0.126936, 1e-3, 1e-5])
def test_pld_gaussian_matches_the_exact_privacy_profile(delta: float) -> None:
    accountant = Accountant(sampling="full", backend="pld")
    accountant.step(noise_multiplier=math.sqrt(3), count=3)  # three of sqrt(3) compose to one of z = 1
    exact = optimize.brentq(lambda eps: gaussian_delta(eps, 1.0) - delta, 0.0, 50.0)
    if delta == 0.126936:
        assert exact == pytest.approx(1.0, abs=1e-5)
    # PLD is pessimistic by at most about its discretisation
    assert exact - 1e-9 <= accountant.epsilon(delta) <= exact + 2e-3


def test_local_and_fixed_full_cohort_are_the_gaussian_at_half_the_multiplier() -> None:
    """Sensitivity 2C under replace-one: the Gaussian of multiplier z / 2 (with m = N, no amplification)."""
    reference = Accountant(sampling="full")
    reference.step(noise_multiplier=1.0, count=10)
    local = Accountant(sampling="local")
    local.step(noise_multiplier=2.0, count=10)
    fixed = Accountant(sampling="fixed", population=100)
    fixed.step(noise_multiplier=2.0, clients_per_round=100, count=10)
    assert local.epsilon(1e-5) == reference.epsilon(1e-5)
    assert fixed.epsilon(1e-5) == pytest.approx(reference.epsilon(1e-5), rel=1e-9)


def test_fixed_size_sampling_amplifies_and_is_monotone_in_the_cohort() -> None:
    epsilons = []
    for cohort in (10, 50, 200, 1000):
        accountant = Accountant(sampling="fixed", population=1000)
        accountant.step(noise_multiplier=1.0, clients_per_round=cohort, count=100)
        epsilons.append(accountant.epsilon(1e-5))
    assert epsilons == sorted(epsilons)
    assert epsilons[0] < epsilons[-1] / 5


def test_poisson_clients_per_round_means_rate_m_over_n() -> None:
    by_count = Accountant(population=1000)
    by_count.step(noise_multiplier=1.2, clients_per_round=40, count=50)
    by_rate = Accountant()
    by_rate.step(noise_multiplier=1.2, sampling_rate=0.04, count=50)
    assert by_count.epsilon(1e-5) == by_rate.epsilon(1e-5)


@pytest.mark.parametrize(("z", "q", "steps"), [(1.0, 0.01, 100), (1.5, 0.04, 500), (0.8, 0.1, 50), (3.0, 1.0, 10)])
def test_pld_is_tighter_than_rdp(z: float, q: float, steps: int) -> None:
    rdp, pld = Accountant(backend="rdp"), Accountant(backend="pld", pld_discretization=1e-3)
    for accountant in (rdp, pld):
        accountant.step(noise_multiplier=z, sampling_rate=q, count=steps)
    assert pld.epsilon(1e-5) <= rdp.epsilon(1e-5)


def test_no_noise_means_infinite_epsilon_and_nothing_spent_means_zero() -> None:
    accountant = Accountant()
    assert accountant.epsilon(1e-5) == 0.0
    accountant.step(noise_multiplier=0.0, sampling_rate=0.1)
    assert accountant.epsilon(1e-5) == math.inf


@settings(max_examples=12, deadline=None)
@given(z=st.floats(0.6, 5.0), q=st.floats(0.001, 1.0), steps=st.integers(1, 500))
def test_epsilon_grows_with_steps_and_sampling_and_shrinks_with_noise(z: float, q: float, steps: int) -> None:
    def eps(noise: float, rate: float, count: int) -> float:
        accountant = Accountant()
        accountant.step(noise_multiplier=noise, sampling_rate=rate, count=count)
        return accountant.epsilon(1e-5)

    base = eps(z, q, steps)
    assert eps(z, q, steps + 10) >= base
    assert eps(z * 1.2, q, steps) <= base
    assert eps(z, min(1.0, q * 1.5), steps) >= base


TARGETS = [0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize(("target", "sampling", "extra"), [
    *[(t, "poisson", {"sampling_rate": 0.05}) for t in TARGETS],
    *[(t, "full", {}) for t in TARGETS],
    *[(t, "fixed", {"clients_per_round": 50, "population": 1000}) for t in (2.0,)],  # slow to account
])
def test_calibration_never_overshoots_and_is_tight(target: float, sampling: str, extra: dict[str, float]) -> None:
    steps = 100 if sampling != "fixed" else 20
    z = calibrate_noise(target_epsilon=target, delta=1e-5, steps=steps, sampling=sampling,  # type: ignore[arg-type]
                        tol=1e-4, **extra)  # type: ignore[arg-type]

    def spent(noise: float) -> float:
        accountant = Accountant(sampling=sampling, population=extra.get("population"))  # type: ignore[arg-type]
        step_args = {k: v for k, v in extra.items() if k != "population"}
        accountant.step(noise_multiplier=noise, count=steps, **step_args)  # type: ignore[arg-type]
        return accountant.epsilon(1e-5)

    assert spent(z) <= target
    assert spent(z - 1e-2) > target  # and not much more noise than needed


def test_calibration_with_pld_never_overshoots() -> None:
    z = calibrate_noise(target_epsilon=2.0, delta=1e-5, steps=20, sampling_rate=0.1, backend="pld",
                        pld_discretization=1e-3)
    accountant = Accountant(backend="pld", pld_discretization=1e-3)
    accountant.step(noise_multiplier=z, sampling_rate=0.1, count=20)
    assert accountant.epsilon(1e-5) <= 2.0


def test_a_job_stops_before_exceeding_max_epsilon() -> None:
    accountant = Accountant()
    budget, delta, rounds = 2.0, 1e-5, 0
    step = {"noise_multiplier": 1.0, "sampling_rate": 0.05}
    while not accountant.would_exceed(budget, delta, **step):
        accountant.step(**step)
        rounds += 1
    assert 0 < rounds < 10_000
    assert accountant.epsilon(delta) <= budget
    assert accountant.epsilon_after(delta, **step) > budget
    accountant.step(**step)  # what the driver must not do
    assert accountant.epsilon(delta) > budget


def test_would_exceed_changes_nothing() -> None:
    accountant = Accountant()
    accountant.step(noise_multiplier=1.0, sampling_rate=0.05, count=10)
    before = accountant.to_bytes()
    accountant.would_exceed(100.0, 1e-5, noise_multiplier=1.0, sampling_rate=0.5, count=50)
    assert accountant.to_bytes() == before and accountant.steps == 10


@pytest.mark.parametrize("backend", ["rdp", "pld"])
def test_a_resumed_accountant_reports_the_identical_epsilon(backend: str) -> None:
    plan = [(1.0, 0.05)] * 7 + [(1.3, 0.05)] * 5 + [(1.0, 0.1)] * 4
    original = Accountant(backend=backend, pld_discretization=1e-3)  # type: ignore[arg-type]
    resumed: Accountant | None = None
    for index, (z, q) in enumerate(plan):
        original.step(noise_multiplier=z, sampling_rate=q)
        if index == 8:  # checkpoint in the middle of a group
            resumed = Accountant.from_bytes(original.to_bytes())
            assert resumed.epsilon(1e-5) == original.epsilon(1e-5)
    assert resumed is not None
    for z, q in plan[9:]:
        resumed.step(noise_multiplier=z, sampling_rate=q)
    assert resumed.steps == original.steps == len(plan)
    assert resumed.epsilon(1e-5) == original.epsilon(1e-5)
    assert resumed.to_bytes() == original.to_bytes()


def test_state_is_compact_json_without_pickle() -> None:
    accountant = Accountant(sampling="fixed", population=500)
    accountant.step(noise_multiplier=1.1, clients_per_round=20, count=1000)
    state = json.loads(accountant.to_bytes())
    assert state["steps"] == [[1.1, None, 20, 1000]]
    assert state["sampling"] == "fixed" and state["population"] == 500
    restored = Accountant.from_bytes(accountant.to_bytes())
    assert restored.epsilon(1e-6) == accountant.epsilon(1e-6)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"format": "other"}',
                                  b'{"format": "fedra.privacy.accountant/1", "sampling": "poisson"}',
                                  b'{"format":"fedra.privacy.accountant/1","sampling":"poisson","backend":"rdp",'
                                  b'"population":null,"pld_discretization":0.0001,"steps":[[-1.0,0.1,null,1]]}'])
def test_a_bad_state_is_a_state_error(data: bytes) -> None:
    with pytest.raises(StateError, match="accountant state"):
        Accountant.from_bytes(data)


def test_invalid_arguments_name_the_field() -> None:
    with pytest.raises(ConfigError, match="sampling: expected one of"):
        Accountant(sampling="stratified")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="accountant: expected 'rdp'"):
        Accountant(sampling="fixed", backend="pld", population=10)
    with pytest.raises(ConfigError, match="exactly one of sampling_rate or clients_per_round"):
        Accountant().step(noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="population"):
        Accountant(sampling="fixed").step(noise_multiplier=1.0, clients_per_round=3)
    with pytest.raises(ConfigError, match="clients_per_round: expected an integer in"):
        Accountant(sampling="fixed", population=10).step(noise_multiplier=1.0, clients_per_round=11)
    with pytest.raises(ConfigError, match="sampling_rate: expected a number in"):
        Accountant().step(noise_multiplier=1.0, sampling_rate=1.5)
    with pytest.raises(ConfigError, match="delta: expected a number in"):
        Accountant().epsilon(0.0)
    with pytest.raises(ConfigError, match="max_epsilon"):
        Accountant().would_exceed(-1.0, 1e-5, noise_multiplier=1.0, sampling_rate=0.1)
    with pytest.raises(ConfigError, match="target_epsilon"):
        calibrate_noise(target_epsilon=0.0, delta=1e-5, steps=10, sampling_rate=0.1)
