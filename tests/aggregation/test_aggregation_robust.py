"""Tests of the robust rules: coordinate median, trimmed mean, Krum and Multi-Krum."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aggregation_strategies import models
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedra.aggregation import (
    _robust,
    coordinate_median,
    krum,
    krum_scores,
    multi_krum,
    trimmed_mean,
    weighted_mean,
)
from fedra.errors import AggregationError


def scalars(*values: float) -> list[dict[str, np.ndarray]]:
    return [{"w": np.array([v])} for v in values]


# --- coordinate median ------------------------------------------------------------------------------


def test_median_hand_computed_odd_and_even() -> None:
    ups = [{"w": np.array([1.0, 9.0])}, {"w": np.array([2.0, -5.0])}, {"w": np.array([100.0, 0.0])}]
    np.testing.assert_array_equal(coordinate_median(ups)["w"], [2.0, 0.0])
    ups.append({"w": np.array([3.0, 4.0])})  # even n: mean of the two middle values
    np.testing.assert_array_equal(coordinate_median(ups)["w"], [2.5, 2.0])


def test_median_ignores_a_huge_outlier() -> None:
    out = coordinate_median(scalars(1.0, 1.1, 0.9, 1e30, -1e30 / 3))
    np.testing.assert_array_equal(out["w"], [1.0])


@pytest.mark.parametrize(("dtype", "expected"), [("float16", 2.5), ("float32", 2.5), ("int64", 2), ("int8", 2)])
def test_median_preserves_dtype(dtype: str, expected: float) -> None:
    ups = [{"x": np.array([[v]], dtype)} for v in (1, 2, 3, 7)]
    out = coordinate_median(ups)
    assert out["x"].dtype == np.dtype(dtype) and out["x"].shape == (1, 1)
    assert out["x"][0, 0] == expected  # ints: 2.5 rounds to 2 (ties to even)


def test_median_bool() -> None:
    ups = [{"m": np.array([True, False])}, {"m": np.array([True, False])}, {"m": np.array([False, True])}]
    out = coordinate_median(ups)
    assert out["m"].dtype == np.bool_
    np.testing.assert_array_equal(out["m"], [True, False])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_median_of_odd_n_is_the_middle_value(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64", "float32", "float16", "int32")))
    assume(len(updates) % 2 == 1)
    out = coordinate_median(updates)
    for name, first in updates[0].items():
        middle = np.sort(np.stack([u[name] for u in updates]), axis=0)[len(updates) // 2]
        assert out[name].dtype == first.dtype
        np.testing.assert_array_equal(out[name], middle)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_median_and_trimmed_mean_exactly_invariant_under_permutation(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64", "float32", "int16")))
    perm = data.draw(st.permutations(range(len(updates))))
    beta = data.draw(st.floats(0, 0.49))
    permuted = [updates[i] for i in perm]
    for rule in (coordinate_median, lambda u: trimmed_mean(u, trim_fraction=beta)):
        out, out_p = rule(updates), rule(permuted)
        for name in out:
            np.testing.assert_array_equal(out_p[name], out[name])


def test_blocked_stacking_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    updates = [{"a": rng.standard_normal((17, 31)).astype(np.float32), "b": rng.integers(0, 9, 50)} for _ in range(7)]
    whole_median = coordinate_median(updates)
    whole_trimmed = trimmed_mean(updates, trim_fraction=0.3)
    whole_scores = krum_scores(updates, num_byzantine=1)
    monkeypatch.setattr(_robust, "_STACK_BYTES", 7 * 8 * 5)  # blocks of 5 columns (or 10 for float32)
    for name in updates[0]:
        np.testing.assert_array_equal(coordinate_median(updates)[name], whole_median[name])
        np.testing.assert_array_equal(trimmed_mean(updates, trim_fraction=0.3)[name], whole_trimmed[name])
    np.testing.assert_allclose(krum_scores(updates, num_byzantine=1), whole_scores, rtol=1e-10)


# --- trimmed mean -----------------------------------------------------------------------------------


def test_trimmed_mean_hand_computed() -> None:
    ups = scalars(1.0, 2.0, 3.0, 4.0, 1000.0)
    np.testing.assert_array_equal(trimmed_mean(ups, trim_fraction=0.2)["w"], [3.0])  # drop 1 and 1000
    np.testing.assert_array_equal(trimmed_mean(ups, trim_fraction=0.4)["w"], [3.0])  # k = 2: the median
    np.testing.assert_array_equal(trimmed_mean(ups, trim_fraction=0.19)["w"], [202.0])  # k = 0: the mean
    four = scalars(10.0, -7.0, 1.0, 2.0)
    np.testing.assert_array_equal(trimmed_mean(four, trim_fraction=0.25)["w"], [1.5])  # keeps 1 and 2


def test_trimmed_mean_per_coordinate() -> None:
    ups = [{"w": np.array([1.0, 50.0])}, {"w": np.array([-90.0, 2.0])}, {"w": np.array([3.0, 3.0])}]
    np.testing.assert_array_equal(trimmed_mean(ups, trim_fraction=1 / 3)["w"], [1.0, 3.0])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64", "uint8"])
def test_trimmed_mean_preserves_dtype(dtype: str) -> None:
    ups = [{"x": np.array([v, v + 1], dtype)} for v in (1, 2, 4, 9, 100)]
    out = trimmed_mean(ups, trim_fraction=0.2)  # keeps 2, 4, 9 -> 5; and 3, 5, 10 -> 6
    assert out["x"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out["x"], np.array([5, 6], dtype))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_trimmed_mean_with_no_trim_is_the_mean(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64",)))
    beta = data.draw(st.floats(0, 1 / (len(updates) + 1), exclude_max=True))  # floor(beta * n) == 0
    out = trimmed_mean(updates, trim_fraction=beta)
    for name in updates[0]:
        stack = np.stack([u[name] for u in updates])
        np.testing.assert_allclose(out[name], stack.mean(axis=0), rtol=1e-12, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_trimmed_mean_matches_sorted_slice_oracle(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64",), max_n=9))
    beta = data.draw(st.floats(0, 0.49))
    n = len(updates)
    k = int(np.floor(beta * n))
    out = trimmed_mean(updates, trim_fraction=beta)
    for name in updates[0]:
        stack = np.sort(np.stack([u[name] for u in updates]), axis=0)
        np.testing.assert_allclose(out[name], stack[k : n - k].mean(axis=0), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    ("beta", "message"),
    [
        (0.5, r"trim_fraction: expected a number in \[0, 0.5\), got 0.5"),
        (-0.1, r"trim_fraction: expected a number in \[0, 0.5\), got -0.1"),
        (float("nan"), r"trim_fraction: expected a number in \[0, 0.5\), got nan"),
        (True, r"trim_fraction: expected a number in \[0, 0.5\), got bool"),
        ("0.1", r"trim_fraction: expected a number in \[0, 0.5\), got str"),
    ],
)
def test_trimmed_mean_rejects_bad_fraction(beta: Any, message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        trimmed_mean(scalars(1.0, 2.0, 3.0), trim_fraction=beta)


def test_robust_rules_reject_bad_updates() -> None:
    with pytest.raises(AggregationError, match=r"expected at least one update, got none"):
        coordinate_median([])
    with pytest.raises(AggregationError, match=r"update 1, array 'w': expected shape \(1,\), got \(2,\)"):
        trimmed_mean([{"w": np.ones(1)}, {"w": np.ones(2)}], trim_fraction=0.0)
    with pytest.raises(AggregationError, match=r"update 2: expected arrays \['w'\], got \['v'\]"):
        krum([{"w": np.ones(1)}, {"w": np.ones(1)}, {"v": np.ones(1)}], num_byzantine=0)


# --- Krum -------------------------------------------------------------------------------------------


def test_krum_scores_hand_computed() -> None:
    # n = 5, f = 1: each score sums the n - f - 2 = 2 smallest squared distances to the others.
    ups = scalars(0.0, 0.1, -0.1, 0.05, 50.0)
    expected = [
        0.0025 + 0.01,  # 0.0: to 0.05 and to +-0.1
        0.0025 + 0.01,  # 0.1: to 0.05 and 0.0
        0.01 + 0.0225,  # -0.1: to 0.0 and 0.05
        0.0025 + 0.0025,  # 0.05: to 0.0 and 0.1
        49.9**2 + 49.95**2,  # 50: to 0.1 and 0.05
    ]
    np.testing.assert_allclose(krum_scores(ups, num_byzantine=1), expected, rtol=1e-12)
    assert krum(ups, num_byzantine=1) == 3


def test_krum_distances_sum_over_all_arrays() -> None:
    # Two arrays per update; distances are over the concatenation. f = 0, n = 3: nearest n - 2 = 1.
    ups = [
        {"a": np.array([0.0, 0.0], np.float32), "b": np.array([[0]], np.int64)},
        {"a": np.array([3.0, 0.0], np.float32), "b": np.array([[4]], np.int64)},  # 9 + 16 = 25 from 0
        {"a": np.array([0.0, 1.0], np.float32), "b": np.array([[10]], np.int64)},  # 1 + 100 = 101 from 0
    ]
    # distances: d01 = 25, d02 = 101, d12 = 9 + 1 + 36 = 46
    np.testing.assert_allclose(krum_scores(ups, num_byzantine=0), [25.0, 25.0, 46.0])
    assert krum(ups, num_byzantine=0) == 0  # tie between 0 and 1 goes to the lower index


def test_krum_identical_updates_tie_to_lowest_index() -> None:
    ups = scalars(7.0, 7.0, 7.0, 7.0)
    np.testing.assert_array_equal(krum_scores(ups, num_byzantine=0), [0.0, 0.0, 0.0, 0.0])
    assert krum(ups, num_byzantine=0) == 0
    _, selected = multi_krum(ups, [1.0] * 4, num_byzantine=0, num_selected=3)
    assert selected == [0, 1, 2]


def test_krum_scores_are_not_negative_despite_cancellation() -> None:
    base = np.full(1000, 1e8)
    ups = [{"w": base + eps} for eps in (0.0, 1e-8, 0.0, 2e-8)]
    scores = krum_scores(ups, num_byzantine=0)
    assert np.all(scores >= 0)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_krum_picks_from_the_honest_cluster(data: st.DataObject) -> None:
    f = data.draw(st.integers(0, 3))
    honest = data.draw(st.integers(f + 3, f + 8))  # n = honest + f > 2f + 2
    dim = data.draw(st.integers(1, 6))
    center = data.draw(hnp.arrays(np.float64, dim, elements=st.floats(-100, 100)))
    noise = st.floats(-1, 1)
    ups: list[dict[str, np.ndarray]] = [
        {"w": center + data.draw(hnp.arrays(np.float64, dim, elements=noise))} for _ in range(honest)
    ]
    # Byzantine updates far away, possibly colluding at a single point.
    offset = data.draw(hnp.arrays(np.float64, dim, elements=st.floats(-1, 1)).filter(lambda v: np.abs(v).max() > 0.5))
    collude = data.draw(st.booleans())
    for j in range(f):
        ups.append({"w": center + 1e4 * (offset if collude else offset * (j + 1))})
    perm = data.draw(st.permutations(range(len(ups))))
    shuffled = [ups[i] for i in perm]
    chosen = perm[krum(shuffled, num_byzantine=f)]
    assert chosen < honest
    _, selected = multi_krum(shuffled, [1.0] * len(ups), num_byzantine=f, num_selected=honest)
    assert sorted(perm[i] for i in selected) == list(range(honest))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_krum_invariant_under_permutation_modulo_ties(data: st.DataObject) -> None:
    f = data.draw(st.integers(0, 2))
    updates = data.draw(models(min_n=2 * f + 3, max_n=2 * f + 6, dtypes=("float64", "float32"), bound=100))
    perm = data.draw(st.permutations(range(len(updates))))
    scores = krum_scores(updates, num_byzantine=f)
    permuted_scores = krum_scores([updates[i] for i in perm], num_byzantine=f)
    tol = 1e-9 * max(1.0, float(scores.max()))
    np.testing.assert_allclose(permuted_scores, scores[list(perm)], rtol=1e-9, atol=tol)
    chosen = perm[krum([updates[i] for i in perm], num_byzantine=f)]
    # The same update, or one whose score ties the best within rounding.
    assert chosen == krum(updates, num_byzantine=f) or scores[chosen] <= scores.min() + tol


def test_multi_krum_hand_computed() -> None:
    ups = scalars(0.0, 0.1, -0.1, 0.05, 50.0)
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    out, selected = multi_krum(ups, weights, num_byzantine=1, num_selected=3)
    assert selected == [3, 0, 1]  # scores 0.005, then 0.0125 twice: tie to the lower index
    np.testing.assert_allclose(out["w"], [(4 * 0.05 + 1 * 0.0 + 2 * 0.1) / 7], rtol=1e-15)


def test_multi_krum_with_one_selected_is_krum() -> None:
    rng = np.random.default_rng(1)
    ups = [{"w": rng.standard_normal(8).astype(np.float32)} for _ in range(7)]
    out, selected = multi_krum(ups, [1.0] * 7, num_byzantine=2, num_selected=1)
    assert selected == [krum(ups, num_byzantine=2)]
    np.testing.assert_array_equal(out["w"], ups[selected[0]]["w"])
    assert out["w"].dtype == np.float32


def test_multi_krum_selecting_all_is_weighted_mean() -> None:
    rng = np.random.default_rng(2)
    ups = [{"w": rng.standard_normal(5)} for _ in range(5)]
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    out, selected = multi_krum(ups, weights, num_byzantine=0, num_selected=5)
    assert sorted(selected) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(out["w"], weighted_mean(ups, weights)["w"], rtol=1e-13)


@pytest.mark.parametrize(
    ("n", "f", "message"),
    [
        (4, 1, r"Krum with num_byzantine=1 needs n > 2f \+ 2: expected more than 4 updates, got 4"),
        (2, 0, r"Krum with num_byzantine=0 needs n > 2f \+ 2: expected more than 2 updates, got 2"),
        (9, 4, r"expected more than 10 updates, got 9"),
        (5, -1, r"num_byzantine: expected an int >= 0, got -1"),
        (5, True, r"num_byzantine: expected an int >= 0, got bool"),
        (5, 1.0, r"num_byzantine: expected an int >= 0, got float"),
    ],
)
def test_krum_rejects(n: int, f: Any, message: str) -> None:
    ups = scalars(*range(n))
    with pytest.raises(AggregationError, match=message):
        krum_scores(ups, num_byzantine=f)
    with pytest.raises(AggregationError, match=message):
        krum(ups, num_byzantine=f)
    with pytest.raises(AggregationError, match=message):
        multi_krum(ups, [1.0] * n, num_byzantine=f, num_selected=1)


@pytest.mark.parametrize(
    ("weights", "m", "message"),
    [
        ([1.0] * 6, 0, r"num_selected: expected an int in \[1, 5\], got 0"),
        ([1.0] * 6, 6, r"num_selected: expected an int in \[1, 5\], got 6"),
        ([1.0] * 6, 2.0, r"num_selected: expected an int in \[1, 5\], got float"),
        ([1.0] * 5, 2, r"expected 6 weights \(one per update\), got 5"),
        ([1.0, -1.0, 1.0, 1.0, 1.0, 1.0], 2, r"weight 1: expected a finite weight >= 0, got -1.0"),
        ([0.0, 0.0, 0.0, 0.0, 1.0, 1.0], 2, r"selected updates \[1, 2\]: expected a positive total weight, got 0.0"),
    ],
)
def test_multi_krum_rejects(weights: list[float], m: Any, message: str) -> None:
    ups = scalars(0.0, 1.0, 2.0, 3.0, 4.0, 5.0)  # f = 1: scores favour the middle (1, 2, 3, 4)
    with pytest.raises(AggregationError, match=message):
        multi_krum(ups, weights, num_byzantine=1, num_selected=m)
