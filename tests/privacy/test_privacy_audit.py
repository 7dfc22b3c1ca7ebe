"""One-run audit (Steinke, Nasr and Jagielski 2023): the bound's arithmetic, its validity, and a canary-client
audit of DP-FedAvg that passes with noise and fails (as it must) without."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedra.errors import ConfigError
from fedra.privacy import (
    Accountant,
    audit_epsilon_lower_bound,
    audit_p_value,
    calibrate_noise,
    canary_audit,
    one_run_audit,
)


@pytest.mark.parametrize("r", [10, 100, 1000])
def test_all_correct_pure_dp_bound_has_a_closed_form(r: int) -> None:
    # delta = 0 and v = r: P[Binomial(r, p) >= r] = p^r = 0.05  =>  eps = log(p / (1 - p)), p = 0.05^(1/r)
    p = 0.05 ** (1 / r)
    expected = math.log(p / (1 - p))
    bound = audit_epsilon_lower_bound(canaries=r, guesses=r, correct=r, delta=0.0, confidence=0.95)
    assert bound == pytest.approx(expected, abs=1e-5)
    assert bound <= expected  # errs low


def test_at_epsilon_zero_the_p_value_is_the_tail_of_random_guessing() -> None:
    for r, v in [(100, 50), (100, 60), (200, 120)]:
        p = audit_p_value(canaries=500, guesses=r, correct=v, epsilon=0.0, delta=0.0)
        assert p == pytest.approx(stats.binom.sf(v - 1, r, 0.5))


def test_p_value_grows_with_epsilon_and_delta() -> None:
    values = [audit_p_value(canaries=1000, guesses=300, correct=240, epsilon=e, delta=1e-5)
              for e in np.linspace(0, 3, 13)]
    assert values == sorted(values)
    assert (audit_p_value(canaries=1000, guesses=300, correct=240, epsilon=1.0, delta=1e-3)
            > audit_p_value(canaries=1000, guesses=300, correct=240, epsilon=1.0, delta=0.0))


def test_chance_level_guessing_refutes_nothing() -> None:
    assert audit_epsilon_lower_bound(canaries=1000, guesses=200, correct=100, delta=1e-5) == 0.0
    assert audit_epsilon_lower_bound(canaries=1000, guesses=200, correct=0, delta=1e-5) == 0.0


def test_the_bound_is_valid_for_randomized_response() -> None:
    """Run the eps-DP randomized-response guesser many times: the 95% bound exceeds eps at most ~5% of runs."""
    rng = np.random.default_rng(99)
    eps, r, trials = 1.0, 100, 200
    accuracy = math.exp(eps) / (1 + math.exp(eps))
    correct = rng.binomial(r, accuracy, size=trials)
    bounds = np.array([audit_epsilon_lower_bound(canaries=r, guesses=r, correct=int(v), delta=0.0) for v in correct])
    violations = float(np.mean(bounds > eps))
    assert violations <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert bounds.max() > 0.3  # and the audit is not vacuous


def test_one_run_audit_counts_guesses_from_scores() -> None:
    included = np.array([True, False, True, False, True, False])
    scores = np.array([5.0, -1.0, 4.0, 0.5, -2.0, -3.0])
    result = one_run_audit(scores=scores, included=included, guesses_in=2, guesses_out=2, delta=1e-5)
    # in: indices 0, 2 (both included); out: indices 5, 4 (5 right, 4 wrong)
    assert (result.guesses, result.correct, result.canaries) == (4, 3, 6)
    with pytest.raises(ConfigError, match="guesses_in, guesses_out"):
        one_run_audit(scores=scores, included=included, guesses_in=4, guesses_out=4, delta=1e-5)
    with pytest.raises(ConfigError, match="audit counts"):
        audit_p_value(canaries=5, guesses=6, correct=1, epsilon=1.0, delta=0.0)


def test_canary_audit_passes_with_noise_and_fails_without() -> None:
    """The issue's check (fast form of bench/bench_privacy_audit.py): 1,000 canary clients, one round."""
    delta, rounds = 1e-5, 1
    z = calibrate_noise(target_epsilon=2.0, delta=delta, steps=rounds, sampling="full")
    accountant = Accountant(sampling="full")
    accountant.step(noise_multiplier=z, count=rounds)
    claimed = accountant.epsilon(delta)
    common = {"canaries": 1000, "clients": 20, "rounds": rounds, "clip_norm": 1.0, "guesses": 200, "delta": delta}
    noised = canary_audit(noise_multiplier=z, rng=np.random.default_rng(1), **common)  # type: ignore[arg-type]
    control = canary_audit(noise_multiplier=0.0, rng=np.random.default_rng(1), **common)  # type: ignore[arg-type]
    assert noised.epsilon_lower_bound < claimed <= 2.0
    assert noised.correct > noised.guesses / 2  # the canaries do leak a little, as they should
    assert control.correct == control.guesses
    assert control.epsilon_lower_bound > claimed  # the audit can fail: no noise refutes the claim
