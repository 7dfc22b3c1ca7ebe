"""Tests of the server optimizers (Reddi et al. 2021, Hsu et al. 2019) and FedProx (Li et al. 2020)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedra.aggregation import (
    _optimizers,
    fedadagrad_step,
    fedadam_step,
    fedavgm_step,
    fedyogi_step,
    initial_second_moment,
    proximal_gradient_np,
    proximal_term_np,
)
from fedra.errors import AggregationError

# --- FedAvgM ----------------------------------------------------------------------------------------


def test_fedavgm_two_steps_hand_computed() -> None:
    x0 = np.array([1.0, 2.0])
    m0 = np.zeros(2)
    d1 = np.array([0.5, -1.0])
    x1, m1 = fedavgm_step(params=x0, delta=d1, momentum=m0, lr=0.5, beta=0.5)
    np.testing.assert_array_equal(m1, [0.5, -1.0])  # 0.5 * 0 + d1
    np.testing.assert_array_equal(x1, [1.25, 1.5])  # x0 + 0.5 * m1
    d2 = np.array([1.0, 1.0])
    x2, m2 = fedavgm_step(params=x1, delta=d2, momentum=m1, lr=0.5, beta=0.5)
    np.testing.assert_array_equal(m2, [1.25, 0.5])  # 0.5 * m1 + d2
    np.testing.assert_array_equal(x2, [1.875, 1.75])  # x1 + 0.5 * m2


def test_fedavgm_with_no_momentum_and_unit_lr_is_fedavg() -> None:
    x = np.array([1.0, -3.0], np.float32)
    aggregate = np.array([2.0, 5.0], np.float32)
    new_x, _ = fedavgm_step(params=x, delta=aggregate - x, momentum=np.zeros(2, np.float32), lr=1.0, beta=0.0)
    np.testing.assert_array_equal(new_x, aggregate)


# --- Reddi et al. Algorithm 2, first steps by hand ----------------------------------------------------


def test_fedadagrad_two_steps_hand_computed() -> None:
    tau, lr, b1 = 1e-3, 0.1, 0.9
    x0 = np.array([0.0, 1.0])
    m0, v0 = np.zeros(2), initial_second_moment(x0, tau=tau)
    d1 = np.array([2.0, -0.5])
    x1, m1, v1 = fedadagrad_step(params=x0, delta=d1, m=m0, v=v0, lr=lr, beta1=b1, tau=tau)
    np.testing.assert_allclose(m1, [0.2, -0.05], rtol=1e-15)  # (1 - 0.9) * d1
    np.testing.assert_allclose(v1, [1e-6 + 4.0, 1e-6 + 0.25], rtol=1e-15)  # tau^2 + d1^2
    expected = [0.0 + lr * 0.2 / (math.sqrt(4.000001) + tau), 1.0 + lr * -0.05 / (math.sqrt(0.250001) + tau)]
    np.testing.assert_allclose(x1, expected, rtol=1e-14)
    d2 = np.array([-1.0, 0.0])
    x2, m2, v2 = fedadagrad_step(params=x1, delta=d2, m=m1, v=v1, lr=lr, beta1=b1, tau=tau)
    np.testing.assert_allclose(m2, [0.9 * 0.2 - 0.1, 0.9 * -0.05], rtol=1e-14)
    np.testing.assert_allclose(v2, [4.000001 + 1.0, 0.250001], rtol=1e-15)  # adagrad only grows
    np.testing.assert_allclose(x2, x1 + lr * m2 / (np.sqrt(v2) + tau), rtol=1e-14)


def test_fedadam_two_steps_hand_computed() -> None:
    tau, lr, b1, b2 = 1e-2, 0.01, 0.9, 0.99
    x0 = np.array([1.0])
    m0, v0 = np.zeros(1), initial_second_moment(x0, tau=tau)
    d1 = np.array([3.0])
    x1, m1, v1 = fedadam_step(params=x0, delta=d1, m=m0, v=v0, lr=lr, beta1=b1, beta2=b2, tau=tau)
    np.testing.assert_allclose(m1, [0.3], rtol=1e-14)
    np.testing.assert_allclose(v1, [0.99 * 1e-4 + 0.01 * 9.0], rtol=1e-14)  # no bias correction
    np.testing.assert_allclose(x1, [1.0 + 0.01 * 0.3 / (math.sqrt(0.090099) + 0.01)], rtol=1e-14)
    d2 = np.array([-1.0])
    x2, m2, v2 = fedadam_step(params=x1, delta=d2, m=m1, v=v1, lr=lr, beta1=b1, beta2=b2, tau=tau)
    np.testing.assert_allclose(m2, [0.27 - 0.1], rtol=1e-14)
    np.testing.assert_allclose(v2, [0.99 * 0.090099 + 0.01], rtol=1e-14)
    np.testing.assert_allclose(x2, [x1[0] + 0.01 * 0.17 / (math.sqrt(0.99 * 0.090099 + 0.01) + 0.01)], rtol=1e-13)


def test_fedyogi_hand_computed_all_three_signs() -> None:
    tau, lr, b1, b2 = 0.5, 1.0, 0.0, 0.75
    x0 = np.zeros(3)
    v0 = np.array([0.25, 9.0, 4.0])  # v - d^2 is < 0, > 0 and = 0 for d = (2, 1, 2)
    d = np.array([2.0, 1.0, 2.0])
    x1, m1, v1 = fedyogi_step(params=x0, delta=d, m=np.zeros(3), v=v0, lr=lr, beta1=b1, beta2=b2, tau=tau)
    # v - (1 - b2) d^2 sign(v - d^2): 0.25 + 0.25*4, 9 - 0.25*1, 4 unchanged
    np.testing.assert_array_equal(v1, [1.25, 8.75, 4.0])
    np.testing.assert_array_equal(m1, d)  # beta1 = 0: m is the pseudo-gradient
    np.testing.assert_allclose(x1, d / (np.sqrt([1.25, 8.75, 4.0]) + 0.5), rtol=1e-15)


def test_fedyogi_first_step_from_tau_squared() -> None:
    tau, b2 = 1e-3, 0.99
    x0 = np.array([5.0])
    v0 = initial_second_moment(x0, tau=tau)
    _, _, v1 = fedyogi_step(params=x0, delta=np.array([0.1]), m=np.zeros(1), v=v0, lr=1.0, beta1=0.9, beta2=b2, tau=tau)
    np.testing.assert_allclose(v1, [1e-6 + 0.01 * 0.01], rtol=1e-14)  # grows, since v < d^2


Step = Callable[..., tuple[np.ndarray, ...]]

STEPS: list[tuple[str, Step, dict[str, float]]] = [
    ("fedadagrad", fedadagrad_step, {"lr": 0.1, "beta1": 0.9, "tau": 1e-3}),
    ("fedadam", fedadam_step, {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}),
    ("fedyogi", fedyogi_step, {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}),
]


@pytest.mark.parametrize(("name", "step", "hyper"), STEPS, ids=[s[0] for s in STEPS])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_adaptive_steps_keep_param_dtype(name: str, step: Step, hyper: dict[str, float], dtype: str) -> None:
    x = np.array([[1.0, -2.0]], dtype)
    compute = np.promote_types(dtype, np.float32)
    v = initial_second_moment(x, tau=hyper["tau"])
    assert v.dtype == compute and v.shape == (1, 2)
    np.testing.assert_allclose(v, np.full((1, 2), hyper["tau"] ** 2), rtol=1e-6)
    new_x, m, new_v = step(params=x, delta=np.array([[0.5, 0.25]], dtype), m=np.zeros((1, 2), compute), v=v, **hyper)
    assert new_x.dtype == np.dtype(dtype) and new_x.shape == (1, 2)
    assert m.dtype == compute and new_v.dtype == compute
    # The step moves along the pseudo-gradient: lr * (1 - beta1) d / (sqrt(v) + tau) ~ lr * 0.1 * sign(d) / ...
    assert np.all(new_x.astype(np.float64) > x.astype(np.float64))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fedavgm_keeps_param_dtype(dtype: str) -> None:
    x = np.array([1.0, 2.0], dtype)
    new_x, m = fedavgm_step(params=x, delta=np.array([0.5, 0.5], dtype), momentum=np.zeros(2, dtype), lr=1.0, beta=0.9)
    assert new_x.dtype == np.dtype(dtype)
    assert m.dtype == np.promote_types(dtype, np.float32)
    np.testing.assert_array_equal(new_x, np.array([1.5, 2.5], dtype))


def _close_to_formula(step: str, x: np.ndarray, d: np.ndarray, m: np.ndarray, v: np.ndarray,
                      lr: float, b1: float, b2: float, tau: float) -> tuple[np.ndarray, ...]:
    """The paper's update, written per element in plain Python floats."""
    nx, nm, nv = [], [], []
    for xi, di, mi, vi in zip(x.tolist(), d.tolist(), m.tolist(), v.tolist(), strict=True):
        mi = b1 * mi + (1 - b1) * di
        if step == "fedadagrad":
            vi = vi + di * di
        elif step == "fedadam":
            vi = b2 * vi + (1 - b2) * di * di
        else:
            s = (vi > di * di) - (vi < di * di)
            vi = vi - (1 - b2) * di * di * s
        nx.append(xi + lr * mi / (math.sqrt(vi) + tau))
        nm.append(mi)
        nv.append(vi)
    return np.array(nx), np.array(nm), np.array(nv)


@settings(max_examples=60, deadline=None)
@given(
    step=st.sampled_from(STEPS),
    x=hnp.arrays(np.float64, 4, elements=st.floats(-10, 10)),
    deltas=st.lists(hnp.arrays(np.float64, 4, elements=st.floats(-1, 1)), min_size=1, max_size=4),
)
def test_adaptive_steps_follow_the_paper_over_several_rounds(
    step: tuple[str, Step, dict[str, float]], x: np.ndarray, deltas: list[np.ndarray]
) -> None:
    name, fn, hyper = step
    tau = hyper["tau"]
    m, v = np.zeros(4), initial_second_moment(x, tau=tau)
    ex, em, ev = x.copy(), m.copy(), v.copy()
    for d in deltas:
        x, m, v = fn(params=x, delta=d, m=m, v=v, **hyper)
        ex, em, ev = _close_to_formula(name, ex, d, em, ev, hyper["lr"], hyper["beta1"], hyper.get("beta2", 0.0), tau)
        np.testing.assert_allclose(x, ex, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m, em, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(v, ev, rtol=1e-12, atol=1e-15)
        assert np.all(v > 0)


def test_steps_never_mutate_inputs() -> None:
    rng = np.random.default_rng(0)
    x, d, m = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)
    v = rng.random(5) + 0.1
    copies = [a.copy() for a in (x, d, m, v)]
    outs: list[np.ndarray] = []
    outs += fedavgm_step(params=x, delta=d, momentum=m, lr=1.0, beta=0.0)
    outs += fedadagrad_step(params=x, delta=d, m=m, v=v, lr=0.1, beta1=0.0, tau=1e-3)
    outs += fedadam_step(params=x, delta=d, m=m, v=v, lr=0.1, beta1=0.0, beta2=0.0, tau=1e-3)
    outs += fedyogi_step(params=x, delta=d, m=m, v=v, lr=0.1, beta1=0.0, beta2=0.0, tau=1e-3)
    for a, c in zip((x, d, m, v), copies, strict=True):
        np.testing.assert_array_equal(a, c)
    for out in outs:
        assert not any(np.shares_memory(out, a) for a in (x, d, m, v))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, r"lr: expected a number in \(0, inf\), got 0.0"),
        ({"lr": float("nan")}, r"lr: expected a number in \(0, inf\), got nan"),
        ({"lr": "1"}, r"lr: expected a number in \(0, inf\), got str"),
        ({"beta1": 1.0}, r"beta1: expected a number in \[0, 1\), got 1.0"),
        ({"beta1": -0.1}, r"beta1: expected a number in \[0, 1\), got -0.1"),
        ({"beta2": 1.0}, r"beta2: expected a number in \[0, 1\), got 1.0"),
        ({"tau": 0.0}, r"tau: expected a number in \(0, inf\), got 0.0"),
        ({"tau": True}, r"tau: expected a number in \(0, inf\), got bool"),
        ({"params": np.array([1, 2])}, r"params: expected a floating array, got dtype int64"),
        ({"params": [1.0, 2.0]}, r"params: expected a numpy array, got list"),
        ({"delta": np.ones(3)}, r"delta: expected shape \(2,\), got \(3,\)"),
        ({"m": np.ones((2, 1))}, r"m: expected shape \(2,\), got \(2, 1\)"),
        ({"v": np.ones(2, np.int32)}, r"v: expected a floating array, got dtype int32"),
        ({"delta": 1.0}, r"delta: expected a numpy array, got float"),
    ],
)
def test_adaptive_steps_reject(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "params": np.ones(2), "delta": np.ones(2), "m": np.zeros(2), "v": np.ones(2),
        "lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3,
    }
    base.update(kwargs)
    with pytest.raises(AggregationError, match=message):
        fedadam_step(**base)
    with pytest.raises(AggregationError, match=message):
        fedyogi_step(**base)
    if "beta2" not in kwargs:
        del base["beta2"]
        with pytest.raises(AggregationError, match=message):
            fedadagrad_step(**base)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 1.0}, r"beta: expected a number in \[0, 1\), got 1.0"),
        ({"lr": -1.0}, r"lr: expected a number in \(0, inf\), got -1.0"),
        ({"momentum": np.zeros(3)}, r"momentum: expected shape \(2,\), got \(3,\)"),
        ({"params": np.ones(2, np.int8)}, r"params: expected a floating array, got dtype int8"),
    ],
)
def test_fedavgm_rejects(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"params": np.ones(2), "delta": np.ones(2), "momentum": np.zeros(2), "lr": 1.0, "beta": 0.9}
    base.update(kwargs)
    with pytest.raises(AggregationError, match=message):
        fedavgm_step(**base)


def test_initial_second_moment_rejects() -> None:
    with pytest.raises(AggregationError, match=r"tau: expected a number in \(0, inf\), got -1.0"):
        initial_second_moment(np.ones(2), tau=-1.0)
    with pytest.raises(AggregationError, match=r"like: expected a floating array, got dtype int64"):
        initial_second_moment(np.ones(2, np.int64), tau=0.1)


# --- FedProx ----------------------------------------------------------------------------------------


def test_proximal_term_and_gradient_hand_computed() -> None:
    params = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([[3.0]], np.float16)}
    reference = {"a": np.array([0.0, 0.0], np.float32), "b": np.array([[1.0]], np.float16)}
    assert proximal_term_np(params, reference, mu=0.5) == pytest.approx(0.25 * (1 + 4 + 4), rel=1e-15)
    grad = proximal_gradient_np(params, reference, mu=0.5)
    assert list(grad) == ["a", "b"]
    np.testing.assert_array_equal(grad["a"], [0.5, 1.0])
    np.testing.assert_array_equal(grad["b"], [[1.0]])
    assert grad["a"].dtype == np.float32 and grad["b"].dtype == np.float16 and grad["b"].shape == (1, 1)
    assert proximal_term_np(params, params, mu=3.0) == 0.0
    assert proximal_term_np(params, reference, mu=0.0) == 0.0


@settings(max_examples=50, deadline=None)
@given(
    w=hnp.arrays(np.float64, 5, elements=st.floats(-5, 5)),
    ref=hnp.arrays(np.float64, 5, elements=st.floats(-5, 5)),
    mu=st.floats(0.01, 10),
)
def test_proximal_gradient_is_the_gradient_of_the_term(w: np.ndarray, ref: np.ndarray, mu: float) -> None:
    grad = proximal_gradient_np({"w": w}, {"w": ref}, mu=mu)["w"]
    h = 1e-5
    for i in range(5):
        up, down = w.copy(), w.copy()
        up[i] += h
        down[i] -= h
        numeric = (proximal_term_np({"w": up}, {"w": ref}, mu=mu) - proximal_term_np({"w": down}, {"w": ref}, mu=mu)) / (2 * h)
        assert numeric == pytest.approx(grad[i], rel=1e-5, abs=1e-5)


def test_proximal_term_chunks_sum_to_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((40, 25)).astype(np.float32)}
    reference = {"w": rng.standard_normal((40, 25)).astype(np.float32)}
    whole = proximal_term_np(params, reference, mu=0.1)
    diff = params["w"].astype(np.float64) - reference["w"]
    assert whole == pytest.approx(0.05 * float(np.sum(diff * diff)), rel=1e-12)
    monkeypatch.setattr(_optimizers, "_CHUNK", 7)
    assert proximal_term_np(params, reference, mu=0.1) == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize(
    ("params", "reference", "mu", "message"),
    [
        ({"a": np.ones(2)}, {"b": np.ones(2)}, 1.0, r"reference: expected arrays \['a'\], got \['b'\]"),
        ({"a": np.ones(2)}, {"a": np.ones(3)}, 1.0, r"reference, array 'a': expected shape \(2,\), got \(3,\)"),
        ({"a": np.ones(2, np.int64)}, {"a": np.ones(2)}, 1.0, r"array 'a': expected floating parameters, got int64 and float64"),
        ({"a": np.ones(2)}, {"a": np.ones(2)}, -0.1, r"mu: expected a number in \[0, inf\), got -0.1"),
        ({"a": np.ones(2)}, {"a": np.ones(2)}, float("inf"), r"mu: expected a number in \[0, inf\), got inf"),
        ([np.ones(2)], {"a": np.ones(2)}, 1.0, r"params: expected a mapping of names to arrays, got list"),
    ],
)
def test_proximal_rejects(params: Any, reference: Any, mu: float, message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        proximal_term_np(params, reference, mu=mu)
    with pytest.raises(AggregationError, match=message):
        proximal_gradient_np(params, reference, mu=mu)
