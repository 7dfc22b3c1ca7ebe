"""Tests of the per-round anomaly scores: norm, cosine to the aggregate, distance to peers, robust z-scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedra.aggregation import UpdateScores, robust_zscores, update_scores
from fedra.errors import AggregationError


def test_update_scores_hand_computed() -> None:
    ups = [{"w": np.array([1.0, 0.0])}, {"w": np.array([0.0, 2.0])}, {"w": np.array([-3.0, 0.0])}]
    s = update_scores(ups, aggregate={"w": np.array([2.0, 0.0])}, num_neighbours=1)
    np.testing.assert_allclose(s.norm, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(s.cosine, [1.0, 0.0, -1.0], atol=1e-15)
    # distances: |u0 - u1| = sqrt(5), |u0 - u2| = 4, |u1 - u2| = sqrt(13)
    np.testing.assert_allclose(s.peer_distance, [math.sqrt(5), math.sqrt(5), math.sqrt(13)], rtol=1e-12)
    s2 = update_scores(ups, aggregate={"w": np.array([2.0, 0.0])}, num_neighbours=5)  # clipped to n - 1
    np.testing.assert_allclose(
        s2.peer_distance,
        [(math.sqrt(5) + 4) / 2, (math.sqrt(5) + math.sqrt(13)) / 2, (4 + math.sqrt(13)) / 2],
        rtol=1e-12,
    )
    assert len(s) == 3 and s.row(2) == pytest.approx({"norm": 3.0, "cosine": -1.0, "peer_distance": math.sqrt(13)})


def test_update_scores_over_all_arrays_and_zero_vectors() -> None:
    ups = [{"a": np.array([3.0]), "b": np.array([[4.0]], np.float32)}, {"a": np.array([0.0]), "b": np.zeros((1, 1), np.float32)}]
    s = update_scores(ups, aggregate={"a": np.array([0.0]), "b": np.array([[1.0]], np.float32)}, num_neighbours=1)
    np.testing.assert_allclose(s.norm, [5.0, 0.0])
    np.testing.assert_allclose(s.cosine, [0.8, 0.0])  # a zero update has cosine 0, not NaN
    np.testing.assert_allclose(s.peer_distance, [5.0, 5.0])
    alone = update_scores(ups[:1], aggregate=ups[0], num_neighbours=3)
    assert isinstance(alone, UpdateScores) and alone.peer_distance.tolist() == [0.0]


def test_update_scores_checks_arguments() -> None:
    ups = [{"w": np.zeros(2)}]
    with pytest.raises(AggregationError, match=r"aggregate, array 'w': expected shape \(2,\), got \(3,\)"):
        update_scores(ups, aggregate={"w": np.zeros(3)}, num_neighbours=1)
    with pytest.raises(AggregationError, match="num_neighbours: expected an int >= 1, got 0"):
        update_scores(ups, aggregate={"w": np.zeros(2)}, num_neighbours=0)


def test_robust_zscores_hand_computed() -> None:
    # median 3, MAD median(|x - 3|) = median(2, 1, 0, 1, 97) = 1, scale 1.4826
    z = robust_zscores([1.0, 2.0, 3.0, 4.0, 100.0])
    np.testing.assert_allclose(z, np.array([-2.0, -1.0, 0.0, 1.0, 97.0]) / 1.4826, rtol=1e-15)


def test_robust_zscores_fallbacks() -> None:
    # MAD 0 (most values equal): mean absolute deviation 10 / 5 = 2, times sqrt(pi / 2) ~ 1.2533
    z = robust_zscores([1.0, 1.0, 1.0, 1.0, 11.0])
    np.testing.assert_allclose(z, np.array([0.0, 0.0, 0.0, 0.0, 10.0]) / (1.2533 * 2.0), rtol=1e-15)
    np.testing.assert_array_equal(robust_zscores([4.0, 4.0, 4.0]), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(robust_zscores([0.0, 1.0, 2.0], min_scale=10.0), [-0.1, 0.0, 0.1])


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=30),
    outlier=st.floats(1e9, 1e12),
)
def test_robust_zscores_are_not_moved_by_one_outlier(values: list[float], outlier: float) -> None:
    # The median and MAD of n + 1 values with one huge outlier stay within the range of the others, so the
    # outlier's z-score is large whenever the others are not all equal.
    z = robust_zscores([*values, outlier])
    spread = max(values) - min(values)
    if spread > 0:
        assert z[-1] > 1.0
    assert np.all(np.isfinite(z))


@pytest.mark.parametrize(("values", "message"), [
    ([], "expected a non-empty 1-d array"),
    ([[1.0]], "expected a non-empty 1-d array"),
    ([1.0, math.nan], "expected finite numbers"),
])
def test_robust_zscores_rejects_bad_input(values: list[float], message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        robust_zscores(values)
