"""Tests of weighted_mean and WeightedMeanAccumulator: hand values, a numpy oracle, determinism."""

from __future__ import annotations

import gc
import itertools
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aggregation_strategies import models, weights_for
from hypothesis import given, settings
from hypothesis import strategies as st

from fedra.aggregation import WeightedMeanAccumulator, _mean, weighted_mean
from fedra.errors import AggregationError, FedraError


def bits(array: np.ndarray) -> bytes:
    """The exact bytes of an array, so that equality means bit-identical (NaN and -0.0 included)."""
    return np.ascontiguousarray(array).tobytes()


def same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bits(a[k]) == bits(b[k]) for k in a
    )


def naive_fold(updates: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """The documented arithmetic, written the obvious way: acc = acc + dtype(w) * x, one update at a time."""
    out = {}
    for name, first in updates[0].items():
        acc_dtype = np.float32 if first.dtype in (np.float16, np.float32) else np.float64
        acc = np.zeros(first.shape, acc_dtype)
        total = 0.0
        for u, w in zip(updates, weights, strict=True):
            if w == 0:
                continue
            acc = acc + acc_dtype(w) * u[name].astype(acc_dtype)
            total += float(acc_dtype(w))
        mean = acc / acc_dtype(total)
        if first.dtype.kind == "f":
            out[name] = mean.astype(first.dtype)
        else:
            out[name] = np.rint(mean).astype(first.dtype)
    return out


# --- hand-computed values ---------------------------------------------------------------------------


def test_weighted_mean_hand_computed_float64() -> None:
    updates = [{"w": np.array([0.0, 2.0]), "b": np.array(1.0)}, {"w": np.array([4.0, 6.0]), "b": np.array(5.0)}]
    out = weighted_mean(updates, [3, 1])
    np.testing.assert_array_equal(out["w"], [1.0, 3.0])  # (3*0 + 4)/4, (3*2 + 6)/4
    assert out["b"].shape == () and out["b"] == 2.0
    assert list(out) == ["w", "b"]


def test_weighted_mean_equal_weights_is_plain_mean() -> None:
    updates = [{"w": np.array([[1.0, 2.0]], np.float32)}, {"w": np.array([[3.0, 7.0]], np.float32)}]
    out = weighted_mean(updates, [5.0, 5.0])
    assert out["w"].dtype == np.float32 and out["w"].shape == (1, 2)
    np.testing.assert_array_equal(out["w"], [[2.0, 4.5]])


def test_zero_weight_update_has_no_effect() -> None:
    updates = [{"w": np.array([1.0, 2.0])}, {"w": np.array([1e30, -1e30])}]
    np.testing.assert_array_equal(weighted_mean(updates, [2.0, 0.0])["w"], [1.0, 2.0])


def test_integer_arrays_are_rounded_to_nearest_ties_to_even() -> None:
    updates = [{"n": np.array([1, 2, 0], np.int64)}, {"n": np.array([3, 4, 1], np.int64)}]
    out = weighted_mean(updates, [3.0, 1.0])
    # (3 + 3)/4 = 1.5 -> 2, (6 + 4)/4 = 2.5 -> 2 (ties to even), 1/4 -> 0
    np.testing.assert_array_equal(out["n"], [2, 2, 0])
    assert out["n"].dtype == np.int64
    out = weighted_mean(updates, [1.0, 2.0])  # (1 + 6)/3 = 2.33 -> 2, (2 + 8)/3 = 3.33 -> 3, 2/3 -> 1
    np.testing.assert_array_equal(out["n"], [2, 3, 1])


def test_num_batches_tracked_like_scalar_int_buffer() -> None:
    updates = [{"num_batches_tracked": np.array(100, np.int64)} for _ in range(3)]
    out = weighted_mean(updates, [1.0, 7.0, 2.5])
    assert out["num_batches_tracked"].dtype == np.int64
    assert out["num_batches_tracked"] == 100


def test_int64_extremes_do_not_overflow_the_cast_back() -> None:
    top = np.iinfo(np.int64).max
    out = weighted_mean([{"n": np.array([top], np.int64)}] * 2, [1.0, 1.0])
    # float64 cannot represent 2**63 - 1; the result is the nearest float below 2**63, never a wrap-around.
    assert out["n"][0] > 0 and out["n"][0] >= top - 2048


def test_bool_arrays_take_the_weighted_majority() -> None:
    updates = [{"m": np.array([True, True])}, {"m": np.array([False, True])}, {"m": np.array([False, False])}]
    out = weighted_mean(updates, [1.0, 1.0, 1.0])  # 1/3 -> False, 2/3 -> True
    np.testing.assert_array_equal(out["m"], [False, True])
    assert out["m"].dtype == np.bool_
    out = weighted_mean(updates, [5.0, 1.0, 1.0])  # 5/7 -> True, 6/7 -> True
    np.testing.assert_array_equal(out["m"], [True, True])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool"])
def test_weighted_mean_preserves_dtype_and_shape(dtype: str) -> None:
    rng = np.random.default_rng(0)
    updates = [{"x": (rng.random((3, 4)) * 10).astype(dtype)} for _ in range(4)]
    out = weighted_mean(updates, [1.0, 2.0, 3.0, 4.0])
    assert out["x"].dtype == np.dtype(dtype)
    assert out["x"].shape == (3, 4)
    stack = np.stack([u["x"] for u in updates]).astype(np.float64)
    oracle = np.average(stack, axis=0, weights=[1.0, 2.0, 3.0, 4.0])
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(out["x"].astype(np.float64), oracle, rtol=2e-3 if dtype == "float16" else 1e-6)
    else:
        np.testing.assert_array_equal(out["x"], np.rint(oracle).astype(dtype))


def test_float16_accumulates_in_float32() -> None:
    # 1000 updates of 1.0 and one of 2048: summing in float16 would stall at 2048 (spacing 2 there).
    updates = [{"h": np.array([1.0], np.float16)} for _ in range(1000)] + [{"h": np.array([2048.0], np.float16)}]
    out = weighted_mean(updates, [1.0] * 1001)
    assert out["h"].dtype == np.float16
    np.testing.assert_allclose(float(out["h"][0]), (1000 + 2048) / 1001, rtol=1e-3)


def test_weighted_mean_does_not_mutate_inputs() -> None:
    updates = [{"w": np.array([1.0, 2.0], np.float32)}, {"w": np.array([3.0, 5.0], np.float32)}]
    before = [u["w"].copy() for u in updates]
    out = weighted_mean(updates, [1.0, 1.0])
    for u, b in zip(updates, before, strict=True):
        np.testing.assert_array_equal(u["w"], b)
        assert not np.shares_memory(out["w"], u["w"])


# --- the numpy oracle and permutations --------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_weighted_mean_matches_numpy_average(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64",)))
    weights = data.draw(weights_for(len(updates)))
    out = weighted_mean(updates, weights)
    for name in updates[0]:
        stack = np.stack([u[name] for u in updates])
        oracle = np.average(stack, axis=0, weights=weights)
        scale = max(1.0, float(np.max(np.abs(stack))))
        np.testing.assert_allclose(out[name], oracle, rtol=1e-12, atol=1e-12 * scale)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_weighted_mean_float32_close_to_float64_oracle(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float32", "float16")))
    weights = data.draw(weights_for(len(updates)))
    out = weighted_mean(updates, weights)
    for name in updates[0]:
        stack = np.stack([u[name] for u in updates]).astype(np.float64)
        oracle = np.average(stack, axis=0, weights=weights)
        scale = max(1.0, float(np.max(np.abs(stack))))
        eps = 1e-3 if updates[0][name].dtype == np.float16 else 1e-6
        np.testing.assert_allclose(out[name].astype(np.float64), oracle, rtol=eps, atol=eps * scale)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_weighted_mean_invariant_under_permutation(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float64", "float32")))
    weights = data.draw(weights_for(len(updates)))
    perm = data.draw(st.permutations(range(len(updates))))
    out = weighted_mean(updates, weights)
    permuted = weighted_mean([updates[i] for i in perm], [weights[i] for i in perm])
    for name in out:
        scale = max(1.0, max(float(np.max(np.abs(u[name]))) for u in updates))
        rtol = 1e-5 if out[name].dtype == np.float32 else 1e-12
        np.testing.assert_allclose(permuted[name], out[name], rtol=rtol, atol=rtol * scale)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_integer_weighted_mean_is_rounded_oracle(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("int64", "int16", "uint8"), bound=1000))
    weights = data.draw(st.lists(st.integers(1, 50), min_size=len(updates), max_size=len(updates)))
    out = weighted_mean(updates, [float(w) for w in weights])
    for name in updates[0]:
        stack = np.stack([u[name] for u in updates]).astype(np.float64)
        exact = np.average(stack, axis=0, weights=weights)
        assert out[name].dtype == updates[0][name].dtype
        # Rounded to nearest: within half a unit (a hair more where a tie meets float64 rounding).
        assert np.all(np.abs(out[name].astype(np.float64) - exact) <= 0.5 + 1e-9)


# --- the accumulator --------------------------------------------------------------------------------


def test_accumulator_hand_computed_and_properties() -> None:
    acc = WeightedMeanAccumulator({"w": np.zeros(2, np.float32)})
    assert acc.count == 0 and acc.total_weight == 0.0
    acc.add({"w": np.array([1.0, 2.0], np.float32)}, 1.0)
    acc.add_many([({"w": np.array([4.0, 8.0], np.float32)}, 2.0), ({"w": np.array([9.0, 9.0], np.float32)}, 0)])
    assert acc.count == 3 and acc.total_weight == 3.0
    np.testing.assert_array_equal(acc.result()["w"], [3.0, 6.0])


def test_accumulator_keeps_folding_after_result_and_result_is_a_copy() -> None:
    acc = WeightedMeanAccumulator({"w": np.zeros(1)})
    acc.add({"w": np.array([2.0])}, 1.0)
    first = acc.result()
    first["w"][0] = 1e9  # must not leak into the running sum
    acc.add({"w": np.array([4.0])}, 1.0)
    np.testing.assert_array_equal(acc.result()["w"], [3.0])


def test_accumulator_uses_template_order_and_not_its_values() -> None:
    acc = WeightedMeanAccumulator({"b": np.full(1, 7.0), "a": np.full(2, 9.0)})
    acc.add({"a": np.array([1.0, 1.0]), "b": np.array([5.0])}, 2.0)
    out = acc.result()
    assert list(out) == ["b", "a"]
    np.testing.assert_array_equal(out["a"], [1.0, 1.0])
    np.testing.assert_array_equal(out["b"], [5.0])


def test_accumulator_does_not_keep_the_updates() -> None:
    acc = WeightedMeanAccumulator({"w": np.zeros(1000, np.float32)})
    update = np.ones(1000, np.float32)
    ref = weakref.ref(update)
    acc.add({"w": update}, 1.0)
    acc.add_many([({"w": update}, 2.0)])
    del update
    gc.collect()
    assert ref() is None
    np.testing.assert_array_equal(acc.result()["w"], np.ones(1000, np.float32))


def test_accumulator_accumulator_dtypes() -> None:
    template = {k: np.zeros(1, k) for k in ("float16", "float32", "float64", "int64", "bool")}
    acc = WeightedMeanAccumulator(template)
    assert {k: a.dtype for k, a in acc._accs.items()} == {
        "float16": np.float32, "float32": np.float32, "float64": np.float64,
        "int64": np.float64, "bool": np.float64,
    }


def test_add_many_is_atomic_on_error() -> None:
    acc = WeightedMeanAccumulator({"w": np.zeros(2)})
    good = ({"w": np.array([1.0, 1.0])}, 1.0)
    bad = ({"w": np.array([1.0, 1.0, 1.0])}, 1.0)
    with pytest.raises(AggregationError, match=r"item 1, array 'w': expected float64 of shape \(2,\), got float64 of shape \(3,\)"):
        acc.add_many([good, bad])
    assert acc.count == 0 and acc.total_weight == 0.0
    acc.add_many([good])
    np.testing.assert_array_equal(acc.result()["w"], [1.0, 1.0])


def _split_into_batches(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    edges = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_add_and_add_many_are_bit_identical(data: st.DataObject) -> None:
    updates = data.draw(models(dtypes=("float16", "float32", "float64", "int32", "bool"), max_arrays=3, max_n=8))
    weights = data.draw(weights_for(len(updates)))
    items = list(zip(updates, weights, strict=True))
    one_by_one = WeightedMeanAccumulator(updates[0])
    for arrays, w in items:
        one_by_one.add(arrays, w)
    batched = WeightedMeanAccumulator(updates[0])
    for batch in _split_into_batches(items, data.draw(st.lists(st.integers(0, 10), max_size=4))):
        batched.add_many(batch)
    single = WeightedMeanAccumulator(updates[0])
    single.add_many(items)
    expected = naive_fold(updates, weights)
    assert same_bits(one_by_one.result(), expected)
    assert same_bits(batched.result(), expected)
    assert same_bits(single.result(), expected)
    assert same_bits(weighted_mean(updates, weights), expected)
    assert one_by_one.count == batched.count == len(updates)
    assert one_by_one.total_weight == pytest.approx(sum(weights))


@pytest.fixture
def tiny_blocks_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force multi-block, multi-thread folds on small arrays (blocks of 64 elements, up to 3 threads)."""
    monkeypatch.setattr(_mean, "_BLOCK_BYTES", 256)
    monkeypatch.setattr(_mean, "_MIN_PARALLEL_WORK", 1)
    monkeypatch.setattr(_mean, "_MAX_THREADS", 3)


def test_blocked_threaded_fold_is_bit_identical_to_naive(tiny_blocks_many_threads: None) -> None:
    rng = np.random.default_rng(7)
    updates = [
        {
            "big": rng.standard_normal(5003).astype(np.float32),
            "half": rng.standard_normal((13, 29)).astype(np.float16),
            "small": rng.standard_normal(3),
            "count": rng.integers(0, 100, size=130),
        }
        for _ in range(11)
    ]
    weights = [float(w) for w in rng.uniform(0.1, 50, size=11)]
    # Cover the split: threads get uneven shares across array boundaries.
    shares = _mean._split([5003, 377, 3, 130], 3)
    assert len(shares) == 3
    assert sum(hi - lo for share in shares for _, lo, hi in share) == 5003 + 377 + 3 + 130
    expected = naive_fold(updates, weights)
    acc = WeightedMeanAccumulator(updates[0])
    for i in range(0, 11, 4):
        acc.add_many(list(zip(updates[i : i + 4], weights[i : i + 4], strict=True)))
    assert same_bits(acc.result(), expected)
    assert same_bits(weighted_mean(updates, weights), expected)


def test_split_covers_every_element_once() -> None:
    for sizes, parts in (([10**6], 2), ([5, 7, 1000, 3], 4), ([1], 8), ([0, 100, 0, 64], 3)):
        shares = _mean._split(sizes, parts)
        assert 1 <= len(shares) <= parts
        covered: dict[int, list[tuple[int, int]]] = {}
        for share in shares:
            for index, lo, hi in share:
                assert lo < hi
                covered.setdefault(index, []).append((lo, hi))
        for index, size in enumerate(sizes):
            ranges = sorted(covered.get(index, []))
            assert sum(hi - lo for lo, hi in ranges) == size
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


# --- validation -------------------------------------------------------------------------------------


def U(**arrays: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in arrays.items()}


@pytest.mark.parametrize(
    ("updates", "weights", "message"),
    [
        ([], [], r"expected at least one update, got none"),
        ({"w": 1}, [1.0], r"expected a sequence of updates \(mappings of arrays\), got dict"),
        ([U(w=[1.0])], [1.0, 2.0], r"expected 1 weights \(one per update\), got 2"),
        ([U(w=[1.0]), U(w=[2.0])], [1.0], r"expected 2 weights \(one per update\), got 1"),
        ([U(w=[1.0])], 1.0, r"expected a sequence of 1 weights, got float"),
        ([U(w=[1.0])], [-1.0], r"weight 0: expected a finite weight >= 0, got -1.0"),
        ([U(w=[1.0])], [float("nan")], r"weight 0: expected a finite weight >= 0, got nan"),
        ([U(w=[1.0])], [float("inf")], r"weight 0: expected a finite weight >= 0, got inf"),
        ([U(w=[1.0])], [1e-300], r"weight 0: expected 0 or a weight in \[1.18e-38, 3.4e\+38\], got 1e-300"),
        ([U(w=[1.0])], [True], r"weight 0: expected a real number, got bool"),
        ([U(w=[1.0])], ["1"], r"weight 0: expected a real number, got str"),
        ([U(w=[1.0]), U(w=[2.0])], [0, 0.0], r"expected at least one positive weight, got all 2 weights equal to 0"),
        ([{}], [1.0], r"update 0: expected at least one array, got none"),
        ([U(w=[1.0]), [1.0]], [1.0, 1.0], r"update 1: expected a mapping of names to arrays, got list"),
        ([{1: np.ones(1)}], [1.0], r"update 0: expected str array names, got 1"),
        ([U(a=[1.0], b=[1.0]), U(a=[1.0])], [1.0, 1.0], r"update 1: expected arrays \['a', 'b'\], got \['a'\] \(missing \['b'\], unexpected \[\]\)"),
        ([U(a=[1.0]), U(a=[1.0], c=[2.0])], [1.0, 1.0], r"update 1: expected arrays \['a'\], got \['a', 'c'\] \(missing \[\], unexpected \['c'\]\)"),
        ([U(a=[1.0, 2.0]), U(a=[1.0])], [1.0, 1.0], r"update 1, array 'a': expected shape \(2,\), got \(1,\)"),
        ([U(a=np.ones(2, np.float32)), U(a=np.ones(2))], [1.0, 1.0], r"update 1, array 'a': expected dtype float32, got float64"),
        ([U(a=np.ones(2, complex))], [1.0], r"array 'a': expected a bool, integer or floating dtype, got complex128"),
        ([U(a=np.array(["x"]))], [1.0], r"array 'a': expected a bool, integer or floating dtype, got <U1"),
    ],
)
def test_weighted_mean_rejects(updates: Any, weights: Any, message: str) -> None:
    with pytest.raises(AggregationError, match=message) as info:
        weighted_mean(updates, weights)
    assert isinstance(info.value, FedraError) and info.value.exit_code == 75


def test_accumulator_rejects_bad_templates_and_updates() -> None:
    with pytest.raises(AggregationError, match=r"template: expected at least one array, got none"):
        WeightedMeanAccumulator({})
    with pytest.raises(AggregationError, match=r"template: expected a mapping of names to arrays, got list"):
        WeightedMeanAccumulator([np.ones(1)])  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match=r"array 'z': expected a bool, integer or floating dtype, got complex64"):
        WeightedMeanAccumulator({"z": np.ones(1, np.complex64)})
    acc = WeightedMeanAccumulator({"w": np.zeros((2, 2), np.float32)})
    with pytest.raises(AggregationError, match=r"item 0, array 'w': expected float32 of shape \(2, 2\), got float64 of shape \(2, 2\)"):
        acc.add({"w": np.zeros((2, 2))}, 1.0)
    with pytest.raises(AggregationError, match=r"item 0, array 'w': expected float32 of shape \(2, 2\), got float32 of shape \(4,\)"):
        acc.add({"w": np.zeros(4, np.float32)}, 1.0)
    with pytest.raises(AggregationError, match=r"item 0: expected arrays \['w'\], got \['v'\]"):
        acc.add({"v": np.zeros((2, 2), np.float32)}, 1.0)
    with pytest.raises(AggregationError, match=r"item 0 weight: expected a finite weight >= 0, got -2.0"):
        acc.add({"w": np.zeros((2, 2), np.float32)}, -2.0)
    with pytest.raises(AggregationError, match=r"expected a sequence of \(arrays, weight\) pairs, got dict"):
        acc.add_many({"w": np.zeros((2, 2), np.float32)})  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match=r"item 0: expected an \(arrays, weight\) pair, got"):
        acc.add_many([({"w": np.zeros((2, 2), np.float32)},)])  # type: ignore[list-item]
    assert acc.count == 0


def test_accumulator_result_needs_updates_and_weight() -> None:
    acc = WeightedMeanAccumulator({"w": np.zeros(1)})
    with pytest.raises(AggregationError, match=r"expected at least one update, got none"):
        acc.result()
    acc.add({"w": np.ones(1)}, 0.0)
    acc.add_many([])
    with pytest.raises(AggregationError, match=r"expected a positive total weight, got 0.0 over 1 updates"):
        acc.result()


# --- the BLAS axpy path for large float arrays --------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_arrays_fold_by_blas_bit_identically_however_batched(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = _mean._BLAS_MIN_SIZE * 3 + 7  # odd size: blocks and BLAS tails fall mid-way
    monkeypatch.setattr(_mean, "_BLAS_BLOCK", 1 << 16)  # several blocks per array
    calls = []
    real = _mean._axpy_kernel

    def counting(dt: np.dtype[Any]) -> Any:
        calls.append(dt)
        return real(dt)

    monkeypatch.setattr(_mean, "_axpy_kernel", counting)
    rng = np.random.default_rng(7)
    updates = [{"big": rng.standard_normal(n).astype(dtype), "small": rng.standard_normal(5).astype(dtype)}
               for _ in range(7)]
    weights = [float(w) for w in rng.integers(1, 500, size=7)]
    one = WeightedMeanAccumulator(updates[0])
    for u, w in zip(updates, weights, strict=True):
        one.add(u, w)
    many = WeightedMeanAccumulator(updates[0])
    many.add_many(list(zip(updates[:3], weights[:3], strict=True)))
    many.add_many(list(zip(updates[3:], weights[3:], strict=True)))
    batch = weighted_mean(updates, weights)
    assert calls and all(dt == np.dtype(dtype) for dt in calls), "the large array must take the BLAS path"
    assert same_bits(one.result(), many.result()) and same_bits(one.result(), batch)
    oracle = np.average(np.stack([u["big"].astype(np.float64) for u in updates]), axis=0, weights=weights)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(batch["big"], oracle, rtol=rtol, atol=rtol)
    assert batch["big"].dtype == np.dtype(dtype)


def test_small_and_converted_arrays_do_not_use_blas(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(dt: np.dtype[Any]) -> Any:
        raise AssertionError("BLAS used for an array that should fold in numpy")

    monkeypatch.setattr(_mean, "_axpy_kernel", fail)
    n = _mean._BLAS_MIN_SIZE + 1
    ups = [{"h": np.ones(n, np.float16), "i": np.ones(n, np.int32), "s": np.ones(10, np.float32)}] * 2
    out = weighted_mean(ups, [1.0, 3.0])
    assert out["h"].dtype == np.float16 and float(out["h"][0]) == 1.0 and out["i"][0] == 1


def test_take_equals_result_reuses_the_sum_and_spends_the_accumulator() -> None:
    rng = np.random.default_rng(3)
    ups = [{"w": rng.standard_normal((4, 5)).astype(np.float32), "n": np.array(i, np.int64)} for i in range(4)]
    acc = WeightedMeanAccumulator(ups[0])
    acc.add_many([(u, float(i + 1)) for i, u in enumerate(ups)])
    expected = acc.result()
    taken = acc.take()
    assert same_bits(taken, expected)
    assert not any(np.shares_memory(taken["w"], u["w"]) for u in ups)
    for call in (acc.result, acc.take, lambda: acc.add(ups[0], 1.0)):
        with pytest.raises(AggregationError, match="spent by take"):
            call()


def test_scipys_openblas_runs_single_threaded_for_small_folds_and_threaded_for_large_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg.blas  # noqa: F401  (loaded, so that its OpenBLAS is among the libraries)

    def blas_threads() -> dict[str, int]:
        return {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"}

    scipys = [f for f in blas_threads() if "scipy" in Path(f).parent.name]
    if not scipys:
        pytest.skip("SciPy's BLAS is not a separate OpenBLAS here")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        with _mean._blas_lock:
            _mean._set_blas_single_threaded(False)  # whatever an earlier test left
        before = blas_threads()
        seen: list[dict[str, int]] = []
        real = _mean._axpy_kernel

        def watching(dt: np.dtype[Any]) -> Any:
            axpy = real(dt)

            def checked(x: Any, y: Any, a: float) -> Any:
                seen.append(blas_threads())
                return axpy(x, y, a=a)

            return checked

        monkeypatch.setattr(_mean, "_axpy_kernel", watching)
        big = {"big": np.ones(_mean._BLAS_MIN_SIZE, np.float32)}
        try:
            weighted_mean([big] * 2, [1.0, 2.0])  # 65,536 elements: a small array
            small, after_small, seen[:] = list(seen), blas_threads(), []
            monkeypatch.setattr(_mean, "_BLAS_THREADED_SIZE", _mean._BLAS_MIN_SIZE)
            weighted_mean([big] * 2, [1.0, 2.0])  # now as large as the threshold
        finally:
            with _mean._blas_lock:
                _mean._set_blas_single_threaded(False)
        assert all(t == 2 for t in before.values())
        single = {f: (1 if f in scipys else t) for f, t in before.items()}  # numpy's own BLAS untouched
        assert small and all(s == single for s in small)
        assert after_small == single  # no restore after each small fold: idle threads would spin again
        assert seen and all(s == before for s in seen)
        assert blas_threads() == before


def test_an_arrays_blas_threads_depend_on_its_size_alone_so_batching_keeps_the_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # axpy's bits depend on BLAS's thread count (the elements where its threads' pieces meet take
    # another path), so a fold of one update and a fold of sixteen must use the same count
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(_mean, "_BLAS_THREADED_SIZE", 200_000)
    rng = np.random.default_rng(5)
    n_big, n_small = 999_983, 65_537  # odd sizes: BLAS's pieces end mid-vector
    updates = [{"big": rng.standard_normal(n_big).astype(np.float32),
                "small": rng.standard_normal(n_small).astype(np.float32)} for _ in range(16)]
    weights = [float(w) for w in rng.integers(1, 500, size=16)]
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        try:
            one = WeightedMeanAccumulator(updates[0])
            for u, w in zip(updates, weights, strict=True):
                one.add(u, w)
            batch = weighted_mean(updates, weights)
        finally:
            with _mean._blas_lock:
                _mean._set_blas_single_threaded(False)
    assert same_bits(one.result(), batch)
