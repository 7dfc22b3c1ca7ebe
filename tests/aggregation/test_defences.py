"""Tests of the defences: Bulyan, centered clipping, norm bounding and FLTrust (and Krum's tolerance).

Hand-computed cases from the papers' definitions, each rule's stated tolerance, and invariants
(permutation, dtype) by property tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from aggregation_strategies import models
from hypothesis import given, settings
from hypothesis import strategies as st

from fedra.aggregation import bulyan, centered_clip, fltrust, krum, norm_bound
from fedra.errors import AggregationError


def vec(*values: float, dtype: str = "float64") -> dict[str, np.ndarray]:
    return {"w": np.array(values, dtype=dtype)}


def norm(update: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in update.values()))


def honest_and_byzantine(
    rng: np.random.Generator, *, honest: int, byzantine: int, dim: int = 6, far: float = 1e3
) -> list[dict[str, np.ndarray]]:
    """Honest updates near 1 in every coordinate, Byzantine ones far away and spread out."""
    ups = [{"a": 1.0 + 0.1 * rng.standard_normal(dim), "b": 1.0 + 0.1 * rng.standard_normal((2, 2))}
           for _ in range(honest)]
    ups += [{"a": far * rng.standard_normal(dim), "b": far * rng.standard_normal((2, 2))}
            for _ in range(byzantine)]
    return ups


# --- norm bounding ----------------------------------------------------------------------------------


def test_norm_bound_hand_computed() -> None:
    out = norm_bound([vec(3.0, 4.0), vec(0.3, 0.4), vec(0.0, 0.0)], max_norm=1.0)
    np.testing.assert_allclose(out[0]["w"], [0.6, 0.8], rtol=1e-15)
    np.testing.assert_array_equal(out[1]["w"], [0.3, 0.4])  # within the bound: untouched
    np.testing.assert_array_equal(out[2]["w"], [0.0, 0.0])


def test_norm_bound_norm_is_over_the_whole_update() -> None:
    # ||(3, 4, 12)|| = 13 across two arrays: both scaled by 2.6 / 13 = 0.2
    out = norm_bound([{"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}], max_norm=2.6)
    np.testing.assert_allclose(out[0]["a"], [0.6, 0.8])
    np.testing.assert_allclose(out[0]["b"], [[2.4]])


def test_norm_bound_returns_copies() -> None:
    ups = [vec(0.1, 0.1)]
    out = norm_bound(ups, max_norm=5.0)
    out[0]["w"][0] = 99.0
    assert ups[0]["w"][0] == 0.1


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_norm_bound_clips_to_the_bound_and_keeps_direction(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64",)))
    bound = data.draw(st.floats(1e-3, 1e3))
    out = norm_bound(updates, max_norm=bound)
    for u, o in zip(updates, out, strict=True):
        n_in = norm(u)
        assert norm(o) <= bound * (1 + 1e-12) or n_in <= bound
        if n_in <= bound:
            for name in u:
                np.testing.assert_array_equal(o[name], u[name])
        else:
            factor = bound / n_in
            for name in u:
                np.testing.assert_allclose(o[name], u[name] * factor, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, True, "1"])
def test_norm_bound_rejects_bad_bounds(bad: object) -> None:
    with pytest.raises(AggregationError, match="max_norm: expected a finite number > 0"):
        norm_bound([vec(1.0)], max_norm=bad)  # type: ignore[arg-type]


# --- centered clipping ------------------------------------------------------------------------------


def test_centered_clip_hand_computed() -> None:
    ups = [vec(1.0), vec(-1.0), vec(10.0)]
    zero = vec(0.0)
    # one step: clip 10 to 2, then (1 - 1 + 2) / 3
    np.testing.assert_allclose(centered_clip(ups, center=zero, tau=2.0)["w"], [2 / 3], rtol=1e-15)
    # second step from 2/3: differences 1/3, -5/3 (within tau) and 28/3 (clipped to 2): v += (2/3) / 3
    np.testing.assert_allclose(
        centered_clip(ups, center=zero, tau=2.0, iterations=2)["w"], [8 / 9], rtol=1e-14
    )


def test_centered_clip_with_a_large_radius_is_the_mean() -> None:
    rng = np.random.default_rng(1)
    ups = [{"w": rng.standard_normal(5)} for _ in range(7)]
    out = centered_clip(ups, center={"w": rng.standard_normal(5)}, tau=1e6)
    np.testing.assert_allclose(out["w"], np.mean([u["w"] for u in ups], axis=0), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 12),
    tau=st.floats(0.01, 10),
    iterations=st.integers(1, 4),
    far=st.floats(1, 1e6),
)
def test_centered_clip_attackers_move_the_center_at_most_tau_f_over_n_per_step(
    seed: int, n: int, tau: float, iterations: int, far: float
) -> None:
    # Karimireddy et al.: with the honest updates at the center, f attackers anywhere move it by at most
    # tau * f / n per iteration.
    rng = np.random.default_rng(seed)
    f = int(rng.integers(1, n))
    center = {"a": rng.standard_normal(4), "b": rng.standard_normal((2, 3))}
    ups = [dict(center) for _ in range(n - f)]
    ups += [{k: v + far * rng.standard_normal(v.shape) for k, v in center.items()} for _ in range(f)]
    out = centered_clip(ups, center=center, tau=tau, iterations=iterations)
    moved = norm({k: out[k] - center[k] for k in center})
    assert moved <= iterations * tau * f / n * (1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 10), tau=st.floats(0.01, 10))
def test_centered_clip_attackers_influence_is_bounded_whatever_the_honest(seed: int, n: int, tau: float) -> None:
    # One step is v + (1/n) sum_i clip(x_i - v): replacing the f attackers changes it by at most 2 tau f / n.
    rng = np.random.default_rng(seed)
    f = int(rng.integers(1, n))
    honest = [{"w": rng.standard_normal(5)} for _ in range(n - f)]
    center = {"w": rng.standard_normal(5)}
    a = centered_clip(honest + [{"w": 1e4 * rng.standard_normal(5)} for _ in range(f)], center=center, tau=tau)
    b = centered_clip(honest + [{"w": -1e4 * rng.standard_normal(5)} for _ in range(f)], center=center, tau=tau)
    assert float(np.linalg.norm(a["w"] - b["w"])) <= 2 * tau * f / n * (1 + 1e-9)


def test_centered_clip_checks_its_arguments() -> None:
    ups = [vec(1.0, 2.0)]
    with pytest.raises(AggregationError, match=r"center, array 'w': expected shape \(2,\), got \(3,\)"):
        centered_clip(ups, center=vec(0.0, 0.0, 0.0), tau=1.0)
    with pytest.raises(AggregationError, match="center: expected arrays"):
        centered_clip(ups, center={"v": np.zeros(2)}, tau=1.0)
    with pytest.raises(AggregationError, match=r"tau: expected a finite number > 0, got -1\.0"):
        centered_clip(ups, center=vec(0.0, 0.0), tau=-1.0)
    with pytest.raises(AggregationError, match="iterations: expected an int >= 1, got 0"):
        centered_clip(ups, center=vec(0.0, 0.0), tau=1.0, iterations=0)


# --- FLTrust ----------------------------------------------------------------------------------------


def test_fltrust_hand_computed() -> None:
    server = vec(1.0, 0.0)
    ups = [vec(2.0, 0.0), vec(1.0, 1.0), vec(-5.0, 0.0)]
    out, scores = fltrust(ups, server_update=server)
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(scores, [1.0, s, 0.0], rtol=1e-15)
    # rescaled to ||g0|| = 1: (1, 0) with weight 1 and (s, s) with weight s; the third has weight 0
    expected = (np.array([1.0, 0.0]) + s * np.array([s, s])) / (1 + s)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-14)


def test_fltrust_gives_no_weight_to_an_update_opposite_to_the_server() -> None:
    rng = np.random.default_rng(2)
    server = {"a": rng.standard_normal(8), "b": rng.standard_normal(3)}
    honest = [{k: v + 0.3 * rng.standard_normal(v.shape) for k, v in server.items()} for _ in range(5)]
    base, _ = fltrust(honest, server_update=server)
    opposite = {k: -1e6 * v for k, v in server.items()}
    out, scores = fltrust([*honest, opposite], server_update=server)
    assert scores[-1] == 0.0
    for name in server:
        np.testing.assert_allclose(out[name], base[name], rtol=1e-12)


def test_fltrust_ignores_scale_and_bounds_the_norm() -> None:
    rng = np.random.default_rng(3)
    server = {"w": rng.standard_normal(6)}
    ups = [{"w": server["w"] + rng.standard_normal(6)} for _ in range(4)]
    out, _ = fltrust(ups, server_update=server)
    boosted = [{"w": u["w"] * (10.0 ** i)} for i, u in enumerate(ups)]  # model replacement's boost
    out_b, _ = fltrust(boosted, server_update=server)
    np.testing.assert_allclose(out_b["w"], out["w"], rtol=1e-10)
    assert norm(out) <= norm(server) * (1 + 1e-12)  # a convex combination of vectors of norm ||g0||


def test_fltrust_with_no_trusted_update_does_not_move() -> None:
    out, scores = fltrust([vec(-1.0, 0.0), vec(0.0, 0.0), vec(0.0, -2.0)], server_update=vec(1.0, 0.0))
    np.testing.assert_array_equal(scores, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["w"], [0.0, 0.0])


def test_fltrust_needs_a_nonzero_server_update() -> None:
    with pytest.raises(AggregationError, match="server_update: expected a nonzero update"):
        fltrust([vec(1.0)], server_update=vec(0.0))
    with pytest.raises(AggregationError, match="server_update, array 'w': expected dtype float64"):
        fltrust([vec(1.0)], server_update=vec(1.0, dtype="float32"))


# --- Krum and Bulyan: tolerance ---------------------------------------------------------------------


@pytest.mark.parametrize("f", [1, 2, 3])
def test_krum_picks_honest_just_above_its_bound_and_refuses_at_it(f: int) -> None:
    rng = np.random.default_rng(f)
    n = 2 * f + 3
    ups = honest_and_byzantine(rng, honest=n - f, byzantine=f)
    assert krum(ups, num_byzantine=f) < n - f
    with pytest.raises(AggregationError, match=rf"needs n > 2f \+ 2: expected more than {2 * f + 2} updates, got {n - 1}"):
        krum(ups[1:], num_byzantine=f)


def test_bulyan_hand_computed() -> None:
    ups = [vec(v) for v in (0.0, 1.0, 2.5, 3.0, 100.0, 4.5, 7.0)]
    out, selected = bulyan(ups, num_byzantine=1)
    # theta = n - 2f = 5 by iterated Krum, with r - f - 2 (at least 1) neighbours among the r remaining:
    # r=7, k=4: 2.5 scores 0.25 + 2.25 + 4 + 6.25 = 12.75 (3.0: 15.5, 1.0: 19.5, ...)
    # r=6, k=3: 3.0 scores 2.25 + 4 + 9 = 15.25 (1.0: 17.25, 4.5: 20.75)
    # r=5, k=2: 1.0 scores 1 + 12.25 = 13.25 (4.5: 18.5, 0.0: 21.25)
    # r=4, k=1: 4.5 and 7.0 are each other's nearest (6.25); the tie goes to the nearer second neighbour:
    #          4.5 (0.0 at 20.25) over 7.0 (0.0 at 49)
    # r=3, k=1: 0.0 and 7.0 tie at 49; second neighbour 100: 7.0 (8649) over 0.0 (10000)
    assert selected == [2, 3, 1, 5, 6]
    # beta = n - 4f = 3 values closest to the median 3 of {2.5, 3, 1, 4.5, 7}: 3, 2.5 and 4.5.
    np.testing.assert_allclose(out["w"], [10 / 3], rtol=1e-15)


def test_bulyan_coordinatewise_stage_hand_computed() -> None:
    # f = 0: theta = n, beta = n; the selection keeps every update and the result is the mean.
    ups = [vec(1.0, 10.0), vec(2.0, -4.0), vec(6.0, 0.0)]
    out, selected = bulyan(ups, num_byzantine=0)
    assert sorted(selected) == [0, 1, 2]
    np.testing.assert_allclose(out["w"], [3.0, 2.0])


@pytest.mark.parametrize("f", [1, 2])
def test_bulyan_selects_only_honest_just_above_its_bound(f: int) -> None:
    rng = np.random.default_rng(10 + f)
    n = 4 * f + 3
    ups = honest_and_byzantine(rng, honest=n - f, byzantine=f)
    out, selected = bulyan(ups, num_byzantine=f)
    assert len(selected) == n - 2 * f and max(selected) < n - f
    honest = ups[: n - f]
    for name in out:
        stack = np.stack([u[name] for u in honest])
        assert np.all(out[name] >= stack.min(axis=0)) and np.all(out[name] <= stack.max(axis=0))


@pytest.mark.parametrize("f", [1, 2, 3])
def test_bulyan_stays_within_the_honest_range_against_a_colluding_cluster(f: int) -> None:
    rng = np.random.default_rng(20 + f)
    n = 4 * f + 3
    honest = [{"w": 1.0 + 0.1 * rng.standard_normal(7)} for _ in range(n - f)]
    cluster = {"w": np.full(7, 50.0)}
    out, _ = bulyan([*honest, *[dict(cluster) for _ in range(f)]], num_byzantine=f)
    stack = np.stack([u["w"] for u in honest])
    assert np.all(out["w"] >= stack.min(axis=0)) and np.all(out["w"] <= stack.max(axis=0))


@pytest.mark.parametrize("f", [0, 1, 2])
def test_bulyan_refuses_below_its_bound(f: int) -> None:
    ups = [vec(float(i)) for i in range(4 * f + 2)]
    with pytest.raises(
        AggregationError, match=rf"Bulyan with num_byzantine={f} needs n >= 4f \+ 3: expected at least {4 * f + 3} updates, got {4 * f + 2}"
    ):
        bulyan(ups, num_byzantine=f)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bulyan_rejects_bad_num_byzantine(bad: object) -> None:
    with pytest.raises(AggregationError, match="num_byzantine: expected an int >= 0"):
        bulyan([vec(1.0)] * 9, num_byzantine=bad)  # type: ignore[arg-type]


# --- invariants -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), f=st.integers(0, 2), extra=st.integers(0, 3), data=st.data())
def test_defences_are_invariant_under_permutation(seed: int, f: int, extra: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    n = 4 * f + 3 + extra
    ups = [{"a": rng.standard_normal(5), "b": rng.standard_normal((2, 2)).astype(np.float32)} for _ in range(n)]
    perm = data.draw(st.permutations(range(n)))
    permuted = [ups[i] for i in perm]
    server = {"a": rng.standard_normal(5), "b": rng.standard_normal((2, 2)).astype(np.float32)}

    clipped, clipped_p = norm_bound(ups, max_norm=1.5), norm_bound(permuted, max_norm=1.5)
    for i, j in enumerate(perm):
        for name in ups[0]:
            np.testing.assert_array_equal(clipped_p[i][name], clipped[j][name])

    out, scores = fltrust(ups, server_update=server)
    out_p, scores_p = fltrust(permuted, server_update=server)
    np.testing.assert_allclose(scores_p, scores[perm], rtol=1e-12)
    pairs = [
        (out, out_p),
        (centered_clip(ups, center=server, tau=0.7, iterations=3),
         centered_clip(permuted, center=server, tau=0.7, iterations=3)),
        (bulyan(ups, num_byzantine=f)[0], bulyan(permuted, num_byzantine=f)[0]),
    ]
    for a, b in pairs:
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_defences_preserve_names_shapes_and_dtypes(data: st.DataObject) -> None:
    updates = data.draw(models(min_n=3, max_n=8, dtypes=("float64", "float32", "float16", "int32"), bound=100.0))
    like = updates[0]
    results = [
        *norm_bound(updates, max_norm=1.0),
        centered_clip(updates, center=like, tau=1.0),
        bulyan(updates, num_byzantine=0)[0],
    ]
    if norm(like) > 0:
        results.append(fltrust(updates, server_update=like)[0])
    for out in results:
        assert list(out) == list(like)
        for name, array in like.items():
            assert out[name].dtype == array.dtype and out[name].shape == array.shape


def test_integer_arrays_are_rounded_back() -> None:
    out = centered_clip([{"n": np.array([1], np.int64)}, {"n": np.array([2], np.int64)}],
                        center={"n": np.array([0], np.int64)}, tau=100.0)
    assert out["n"].dtype == np.int64 and out["n"][0] == 2  # 1.5 rounds to even
