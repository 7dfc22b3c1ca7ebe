"""Tests of the model-poisoning attacks: each attack's defining property, from its paper."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedra.aggregation import weighted_mean
from fedra.attacks import alie, alie_z, gaussian_noise, ipm, min_max, min_sum, scale, sign_flip
from fedra.errors import AggregationError, ConfigError

Update = dict[str, np.ndarray]


def flat(u: Update) -> np.ndarray:
    return np.concatenate([np.asarray(u[k], np.float64).reshape(-1) for k in ("a", "b")])


def round_of(seed: int, *, honest: int, malicious: int, dim: int = 5) -> tuple[list[Update], list[Update]]:
    """Honest-looking updates around a common direction: float arrays 'a' and 'b' and an int counter 'n'."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim)

    def one() -> Update:
        return {
            "a": direction + 0.5 * rng.standard_normal(dim),
            "b": (1.0 + 0.5 * rng.standard_normal((2, 2))).astype(np.float32),
            "n": np.array(int(rng.integers(1, 100)), np.int64),
        }

    return [one() for _ in range(honest)], [one() for _ in range(malicious)]


def test_sign_flip_negates_floats_and_keeps_counters() -> None:
    _, own = round_of(0, honest=0, malicious=2)
    out = sign_flip(own)
    for u, o in zip(own, out, strict=True):
        np.testing.assert_array_equal(o["a"], -u["a"])
        np.testing.assert_array_equal(o["b"], -u["b"])
        assert o["b"].dtype == np.float32
        np.testing.assert_array_equal(o["n"], u["n"])


def test_gaussian_noise_is_seeded_noise_of_the_given_scale() -> None:
    own = [{"a": np.zeros(20_000), "b": np.ones((100, 100), np.float32), "n": np.array(3)}]
    a = gaussian_noise(own, sigma=2.0, rng=np.random.default_rng(5))
    b = gaussian_noise(own, sigma=2.0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a[0]["a"], b[0]["a"])
    assert a[0]["b"].dtype == np.float32 and a[0]["n"] == 3
    for name in ("a", "b"):
        x = np.asarray(a[0][name], np.float64).reshape(-1)
        assert abs(x.mean()) < 0.1 and abs(x.std() - 2.0) < 0.05  # 10^4 draws: 5-sigma bounds are ~0.07, ~0.05
    with pytest.raises(ConfigError, match=r"sigma: expected a finite number > 0, got 0\.0"):
        gaussian_noise(own, sigma=0.0, rng=np.random.default_rng(0))


def test_scale_boosts_by_n_over_eta() -> None:
    own = [{"a": np.array([1.0, -2.0]), "b": np.array([[0.5]], np.float32), "n": np.array(4)}]
    out = scale(own, num_clients=10, server_lr=0.5)
    np.testing.assert_array_equal(out[0]["a"], [20.0, -40.0])
    np.testing.assert_array_equal(out[0]["b"], np.array([[10.0]], np.float32))
    assert out[0]["n"] == 4


def test_scale_replaces_the_global_model_when_the_others_have_converged() -> None:
    # Bagdasaryan et al.: G + (eta / n) sum_i L_i with L_0 = (n / eta) (X - G) and the rest ~ 0 gives X.
    rng = np.random.default_rng(1)
    n, eta = 8, 0.7
    global_model = rng.standard_normal(6)
    backdoored = rng.standard_normal(6)
    boosted = scale([{"w": backdoored - global_model}], num_clients=n, server_lr=eta)[0]
    updates = [boosted] + [{"w": np.zeros(6)} for _ in range(n - 1)]
    new_global = global_model + eta * weighted_mean(updates, [1.0] * n)["w"]
    np.testing.assert_allclose(new_global, backdoored, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("n", "f", "quantile"), [(50, 12, 0.72), (10, 2, 0.6), (20, 10, 0.95), (7, 1, 4 / 7)])
def test_alie_z_follows_the_papers_formula(n: int, f: int, quantile: float) -> None:
    # s = floor(n / 2 + 1) - f; z_max = Phi^-1((n - s) / n): e.g. n = 50, f = 12: s = 14, (50 - 14) / 50
    s = math.floor(n / 2 + 1) - f
    assert (n - s) / n == pytest.approx(quantile)
    assert alie_z(num_clients=n, num_byzantine=f) == pytest.approx(NormalDist().inv_cdf(quantile), rel=1e-12)


def test_alie_z_pinned_value() -> None:
    assert alie_z(num_clients=50, num_byzantine=12) == pytest.approx(0.5828415, abs=1e-6)


@pytest.mark.parametrize(("n", "f"), [(10, 0), (10, 6), (1, 1)])
def test_alie_z_rejects_out_of_range(n: int, f: int) -> None:
    with pytest.raises(ConfigError, match=r"num_(clients|byzantine): expected an int"):
        alie_z(num_clients=n, num_byzantine=f)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), honest=st.integers(2, 12), malicious=st.integers(1, 4), collude=st.booleans())
def test_alie_is_within_z_sigma_of_the_honest_mean(seed: int, honest: int, malicious: int, collude: bool) -> None:
    assume(malicious <= (honest + malicious) // 2)  # the paper's range: s >= 1
    good, own = round_of(seed, honest=honest, malicious=malicious)
    n = honest + malicious
    out = alie(own, num_clients=n, honest=good if collude else None)
    reference = np.stack([flat(u) for u in (good if collude else own)])
    mu, sigma = reference.mean(axis=0), reference.std(axis=0)
    z = alie_z(num_clients=n, num_byzantine=malicious)
    for o, u in zip(out, own, strict=True):
        x = flat(o)
        # float32 arrays are rounded to float32: allow that much
        assert np.all(np.abs(x - mu) <= z * sigma + 1e-6 * (1 + np.abs(mu)))
        np.testing.assert_allclose(x, mu - z * sigma, rtol=1e-6, atol=1e-6)
        assert o["n"] == u["n"] and o["b"].dtype == np.float32
    np.testing.assert_array_equal(out[0]["a"], out[-1]["a"])  # the attackers send the same update


def test_ipm_hand_computed_and_points_against_the_honest_mean() -> None:
    good = [{"w": np.array([1.0, 2.0])}, {"w": np.array([3.0, 0.0])}]
    own = [{"w": np.array([9.0, 9.0])}]
    out = ipm(own, epsilon=0.5, honest=good)
    np.testing.assert_array_equal(out[0]["w"], [-1.0, -0.5])  # -0.5 * (2, 1)
    assert float(out[0]["w"] @ np.array([2.0, 1.0])) < 0
    alone = ipm(own, epsilon=0.1)  # partial knowledge: the attackers' own mean
    np.testing.assert_allclose(alone[0]["w"], [-0.9, -0.9])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), epsilon=st.floats(1e-3, 100))
def test_ipm_inner_product_with_the_honest_mean_is_negative(seed: int, epsilon: float) -> None:
    good, own = round_of(seed, honest=6, malicious=2)
    mean = np.mean([flat(u) for u in good], axis=0)
    for o in ipm(own, epsilon=epsilon, honest=good):
        assert float(flat(o) @ mean) < 0


def max_distance_to(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(((ref - x) ** 2).sum(axis=1)).max())


def sum_sq_distance_to(x: np.ndarray, ref: np.ndarray) -> float:
    return float(((ref - x) ** 2).sum())


def bounds(ref: np.ndarray) -> tuple[float, float]:
    """The paper's thresholds: the largest pairwise distance, and the largest sum of squared distances."""
    d2 = ((ref[:, None, :] - ref[None, :, :]) ** 2).sum(axis=2)
    return float(np.sqrt(d2.max())), float(d2.sum(axis=1).max())


def direction(ref: np.ndarray, kind: str) -> np.ndarray:
    mu = ref.mean(axis=0)
    return {"unit": -mu / np.linalg.norm(mu), "std": -ref.std(axis=0), "sign": -np.sign(mu)}[kind]


def bisect_gamma(ok: object, hi: float = 1e4, tol: float = 1e-12) -> float:
    """The largest feasible gamma by plain bisection (gamma = 0 is feasible): an independent oracle for
    the binary search of Shejwalkar and Houmansadr's Algorithm 1."""
    assert callable(ok) and not ok(hi)
    lo = 0.0
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


@pytest.mark.parametrize("perturbation", ["unit", "std", "sign"])
@pytest.mark.parametrize("objective", ["max", "sum"])
def test_min_max_and_min_sum_take_the_largest_gamma_that_stays_hidden(perturbation: str, objective: str) -> None:
    attack = min_max if objective == "max" else min_sum
    for seed in range(5):
        good, own = round_of(seed, honest=8, malicious=3)
        out = attack(own, honest=good, perturbation=perturbation)  # type: ignore[arg-type]
        ref = np.stack([flat(u) for u in good])
        mu, p = ref.mean(axis=0), direction(ref, perturbation)
        max_pair, max_sum = bounds(ref)

        def ok(gamma: float, mu: np.ndarray = mu, p: np.ndarray = p, ref: np.ndarray = ref,
               max_pair: float = max_pair, max_sum: float = max_sum) -> bool:
            x = mu + gamma * p
            if objective == "max":
                return max_distance_to(x, ref) <= max_pair
            return sum_sq_distance_to(x, ref) <= max_sum

        # Compare in float64 on the 'a' array exactly and 'b' up to float32 rounding: recover gamma from 'a'.
        x = flat(out[0])
        gamma = float((x[:5] - mu[:5]) @ p[:5] / (p[:5] @ p[:5]))
        assert gamma > 0
        assert ok(gamma)
        assert not ok(gamma * (1 + 1e-6))
        assert gamma == pytest.approx(bisect_gamma(ok), rel=1e-6)
        # the poisoned update itself (float32 part rounded) is hidden up to that rounding
        if objective == "max":
            assert max_distance_to(x, ref) <= max_pair * (1 + 1e-6)
        else:
            assert sum_sq_distance_to(x, ref) <= max_sum * (1 + 1e-6)
        for o, u in zip(out, own, strict=True):
            assert o["n"] == u["n"] and o["b"].dtype == np.float32


def test_min_max_without_collusion_hides_among_the_attackers_own_updates() -> None:
    _, own = round_of(3, honest=0, malicious=5)
    out = min_max(own)
    ref = np.stack([flat(u) for u in own])
    assert max_distance_to(flat(out[0]), ref) <= bounds(ref)[0] * (1 + 1e-6)


def test_min_max_with_one_reference_update_sends_it() -> None:
    own = [{"w": np.array([1.0, 2.0])}]
    np.testing.assert_array_equal(min_max(own)[0]["w"], [1.0, 2.0])  # std perturbation is 0


def test_attacks_check_their_inputs() -> None:
    with pytest.raises(AggregationError, match="expected at least one update, got none"):
        sign_flip([])
    with pytest.raises(AggregationError, match=r"honest update 0, array 'w': expected shape \(2,\), got \(3,\)"):
        ipm([{"w": np.zeros(2)}], epsilon=1.0, honest=[{"w": np.zeros(3)}])
    with pytest.raises(ConfigError, match="perturbation: expected one of unit, std, sign, got 'cos'"):
        min_max([{"w": np.zeros(2)}], perturbation="cos")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_clients: expected an int >= 1, got 0"):
        scale([{"w": np.zeros(2)}], num_clients=0)
