"""Server optimizers and the FedProx proximal term, as pure functions on numpy arrays.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan, "Adaptive Federated Optimization",
ICLR 2021, Algorithm 2 (FedAdagrad, FedAdam, FedYogi). With the pseudo-gradient
``delta = aggregate - params`` (the average client model minus the global model)::

    m = beta1 * m + (1 - beta1) * delta
    v = v + delta**2                                         FedAdagrad
    v = beta2 * v + (1 - beta2) * delta**2                   FedAdam
    v = v - (1 - beta2) * delta**2 * sign(v - delta**2)      FedYogi
    x = x + lr * m / (sqrt(v) + tau)

There is no bias correction, as in the paper. The paper requires ``v_{-1} >= tau**2``: start ``v`` at
:func:`initial_second_moment` and ``m`` at zeros.

Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification", arXiv:1909.06335, 2019 (FedAvgM): server momentum ``m = beta * m + delta``,
``x = x + lr * m`` (``lr = 1`` is the paper's update; ``beta = 0, lr = 1`` is plain FedAvg).

Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020 (FedProx): the client adds ``(mu / 2) * ||w - w_t||^2`` to its loss, whose gradient is
``mu * (w - w_t)``.

Every step works on one array (the strategy layer loops over a model's arrays), returns new arrays and
never mutates its inputs. Arithmetic is in float32 for float16/float32 parameters and float64 for float64;
the new parameters keep the dtype of ``params``, the moments ``m`` and ``v`` are returned in that compute
dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fedra.aggregation._mean import Arrays, as_arrays, check_same_names
from fedra.errors import AggregationError

__all__ = [
    "fedadagrad_step",
    "fedadam_step",
    "fedavgm_step",
    "fedyogi_step",
    "initial_second_moment",
    "proximal_gradient_np",
    "proximal_term_np",
]

#: Elements per chunk of the float64 proximal-term sum, bounding its temporary memory.
_CHUNK: Final = 1 << 20

_Array = npt.NDArray[Any]


def _number(name: str, value: object, *, low: float, high: float, low_open: bool,
            high_open: bool) -> float:
    """``value`` as a float, checking that it is a finite number in the given interval."""
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    interval = f"{left}{low:g}, {high:g}{right}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AggregationError(f"{name}: expected a number in {interval}, got {type(value).__name__}")
    v = float(value)
    ok = (
        math.isfinite(v)
        and (v > low if low_open else v >= low)
        and (v < high if high_open else v <= high)
    )
    if not ok:
        raise AggregationError(f"{name}: expected a number in {interval}, got {v!r}")
    return v


def _lr(value: object) -> float:
    """A learning rate: finite and > 0."""
    return _number("lr", value, low=0.0, high=math.inf, low_open=True, high_open=True)


def _beta(name: str, value: object) -> float:
    """A decay rate: in [0, 1)."""
    return _number(name, value, low=0.0, high=1.0, low_open=False, high_open=True)


def _tau(value: object) -> float:
    """The adaptivity constant: finite and > 0."""
    return _number("tau", value, low=0.0, high=math.inf, low_open=True, high_open=True)


def _compute_dtype(params: object, what: str = "params") -> np.dtype[Any]:
    """The compute dtype for a floating ``params`` array: float32 at least."""
    if not isinstance(params, np.ndarray):
        raise AggregationError(f"{what}: expected a numpy array, got {type(params).__name__}")
    if params.dtype.kind != "f":
        raise AggregationError(f"{what}: expected a floating array, got dtype {params.dtype}")
    return np.promote_types(params.dtype, np.float32)


def _operand(name: str, value: object, params: _Array, dtype: np.dtype[Any]) -> _Array:
    """``value`` as a floating array of ``params``' shape, in ``dtype`` (a new array or a read-only use)."""
    if not isinstance(value, np.ndarray):
        raise AggregationError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.shape != params.shape:
        raise AggregationError(f"{name}: expected shape {params.shape}, got {value.shape}")
    if value.dtype.kind != "f":
        raise AggregationError(f"{name}: expected a floating array, got dtype {value.dtype}")
    return value.astype(dtype, copy=False)


def initial_second_moment(like: npt.NDArray[Any], *, tau: float) -> npt.NDArray[Any]:
    """The starting second moment ``v_{-1} = tau**2`` for FedAdagrad, FedAdam and FedYogi.

    Reddi et al. (ICLR 2021), Algorithm 2, require ``v_{-1} >= tau**2``.

    Parameters
    ----------
    like : numpy.ndarray
        A floating parameter array: gives the shape, and the dtype (float32 at least).
    tau : float
        The adaptivity constant, > 0.

    Returns
    -------
    numpy.ndarray
        A new array full of ``tau**2``.
    """
    dtype = _compute_dtype(like, "like")
    t = _tau(tau)
    return np.full(like.shape, t * t, dtype=dtype)


def fedavgm_step(
    *, params: npt.NDArray[Any], delta: npt.NDArray[Any], momentum: npt.NDArray[Any], lr: float,
    beta: float,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """One FedAvgM server step (Hsu et al., 2019): ``m = beta m + delta``, ``x = x + lr m``.

    Parameters
    ----------
    params : numpy.ndarray
        The global model's array ``x`` (floating).
    delta : numpy.ndarray
        The pseudo-gradient ``aggregate - params``.
    momentum : numpy.ndarray
        The server momentum ``m`` (zeros before the first round).
    lr : float
        Server learning rate, > 0 (1 in the paper).
    beta : float
        Momentum, in ``[0, 1)``.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        ``(new_params, new_momentum)``: new arrays; ``new_params`` in ``params``' dtype.

    Raises
    ------
    AggregationError
        If an array is not floating or of another shape, or a hyperparameter is out of range.
    """
    dtype = _compute_dtype(params)
    d = _operand("delta", delta, params, dtype)
    m = _operand("momentum", momentum, params, dtype)
    rate, b = dtype.type(_lr(lr)), dtype.type(_beta("beta", beta))
    new_m = b * m + d
    new_x = params.astype(dtype) + rate * new_m
    return new_x.astype(params.dtype, copy=False), new_m


def _adaptive_step(
    params: _Array, delta: _Array, m: _Array, v: _Array, lr: float, beta1: float, tau: float,
    second_moment: Callable[[_Array, _Array, np.dtype[Any]], _Array],
) -> tuple[_Array, _Array, _Array]:
    """Algorithm 2 of Reddi et al. with ``second_moment(v, delta, dtype)`` as the ``v`` update."""
    dtype = _compute_dtype(params)
    d = _operand("delta", delta, params, dtype)
    m0 = _operand("m", m, params, dtype)
    v0 = _operand("v", v, params, dtype)
    rate, b1, t = dtype.type(_lr(lr)), dtype.type(_beta("beta1", beta1)), dtype.type(_tau(tau))
    new_m = b1 * m0 + (dtype.type(1) - b1) * d
    new_v = second_moment(v0, d, dtype)
    new_x = params.astype(dtype) + rate * new_m / (np.sqrt(new_v) + t)
    return new_x.astype(params.dtype, copy=False), new_m, new_v


def fedadagrad_step(
    *, params: npt.NDArray[Any], delta: npt.NDArray[Any], m: npt.NDArray[Any], v: npt.NDArray[Any],
    lr: float, beta1: float, tau: float,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """One FedAdagrad server step (Reddi et al., ICLR 2021, Algorithm 2).

    ``m = beta1 m + (1 - beta1) delta``, ``v = v + delta**2``, ``x = x + lr m / (sqrt(v) + tau)``.

    Parameters
    ----------
    params : numpy.ndarray
        The global model's array ``x`` (floating).
    delta : numpy.ndarray
        The pseudo-gradient ``aggregate - params``.
    m : numpy.ndarray
        First moment (zeros before the first round).
    v : numpy.ndarray
        Second moment, >= 0 (:func:`initial_second_moment` before the first round).
    lr : float
        Server learning rate, > 0.
    beta1 : float
        First-moment decay, in ``[0, 1)``.
    tau : float
        Adaptivity constant, > 0.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]
        ``(new_params, new_m, new_v)``: new arrays; ``new_params`` in ``params``' dtype.

    Raises
    ------
    AggregationError
        If an array is not floating or of another shape, or a hyperparameter is out of range.
    """

    def adagrad(v0: _Array, d: _Array, dtype: np.dtype[Any]) -> _Array:
        return np.asarray(v0 + d * d)

    return _adaptive_step(params, delta, m, v, lr, beta1, tau, adagrad)


def fedadam_step(
    *, params: npt.NDArray[Any], delta: npt.NDArray[Any], m: npt.NDArray[Any], v: npt.NDArray[Any],
    lr: float, beta1: float, beta2: float, tau: float,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """One FedAdam server step (Reddi et al., ICLR 2021, Algorithm 2), without bias correction.

    ``m = beta1 m + (1 - beta1) delta``, ``v = beta2 v + (1 - beta2) delta**2``,
    ``x = x + lr m / (sqrt(v) + tau)``.

    Parameters
    ----------
    params, delta, m, v, lr, beta1, tau
        As for :func:`fedadagrad_step`.
    beta2 : float
        Second-moment decay, in ``[0, 1)``.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]
        ``(new_params, new_m, new_v)``: new arrays; ``new_params`` in ``params``' dtype.

    Raises
    ------
    AggregationError
        If an array is not floating or of another shape, or a hyperparameter is out of range.
    """
    b2 = _beta("beta2", beta2)

    def adam(v0: _Array, d: _Array, dtype: np.dtype[Any]) -> _Array:
        c = dtype.type(b2)
        return np.asarray(c * v0 + (dtype.type(1) - c) * (d * d))

    return _adaptive_step(params, delta, m, v, lr, beta1, tau, adam)


def fedyogi_step(
    *, params: npt.NDArray[Any], delta: npt.NDArray[Any], m: npt.NDArray[Any], v: npt.NDArray[Any],
    lr: float, beta1: float, beta2: float, tau: float,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """One FedYogi server step (Reddi et al., ICLR 2021, Algorithm 2).

    ``m = beta1 m + (1 - beta1) delta``, ``v = v - (1 - beta2) delta**2 sign(v - delta**2)``,
    ``x = x + lr m / (sqrt(v) + tau)``.

    Parameters
    ----------
    params, delta, m, v, lr, beta1, tau
        As for :func:`fedadagrad_step`.
    beta2 : float
        Second-moment decay, in ``[0, 1)``.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]
        ``(new_params, new_m, new_v)``: new arrays; ``new_params`` in ``params``' dtype.

    Raises
    ------
    AggregationError
        If an array is not floating or of another shape, or a hyperparameter is out of range.
    """
    b2 = _beta("beta2", beta2)

    def yogi(v0: _Array, d: _Array, dtype: np.dtype[Any]) -> _Array:
        d2 = d * d
        return np.asarray(v0 - (dtype.type(1) - dtype.type(b2)) * d2 * np.sign(v0 - d2))

    return _adaptive_step(params, delta, m, v, lr, beta1, tau, yogi)


def _prox_pairs(params: Arrays, reference: Arrays, mu: float) -> tuple[
    float, list[tuple[str, _Array, _Array]]
]:
    """Check FedProx's arguments; return ``mu`` and ``(name, w, w_t)`` triples in ``params``' order."""
    m = _number("mu", mu, low=0.0, high=math.inf, low_open=False, high_open=True)
    ws = as_arrays(params, what="params")
    refs = as_arrays(reference, what="reference")
    check_same_names(list(ws), refs, what="reference")
    pairs = []
    for name, w in ws.items():
        ref = refs[name]
        if w.dtype.kind != "f" or ref.dtype.kind != "f":
            raise AggregationError(
                f"array {name!r}: expected floating parameters, got {w.dtype} and {ref.dtype}; "
                "pass only the trainable parameters"
            )
        if w.shape != ref.shape:
            raise AggregationError(
                f"reference, array {name!r}: expected shape {w.shape}, got {ref.shape}"
            )
        pairs.append((name, w, ref))
    return m, pairs


def proximal_term_np(params: Arrays, reference: Arrays, *, mu: float) -> float:
    """FedProx's proximal term ``(mu / 2) ||w - w_t||^2`` over a whole numpy model (Li et al., 2020).

    Parameters
    ----------
    params : Arrays
        The client's current parameters ``w`` (floating arrays).
    reference : Arrays
        The global model ``w_t`` received this round, with the same names and shapes.
    mu : float
        Proximal coefficient, >= 0.

    Returns
    -------
    float
        The term, with the squared norm summed over every array in float64.

    Raises
    ------
    AggregationError
        If the names or shapes differ, an array is not floating, or ``mu`` is invalid.
    """
    m, pairs = _prox_pairs(params, reference, mu)
    total = 0.0
    for _, w, ref in pairs:
        flat_w, flat_ref = w.reshape(-1), ref.reshape(-1)
        for lo in range(0, flat_w.size, _CHUNK):
            diff = flat_w[lo : lo + _CHUNK].astype(np.float64) - flat_ref[lo : lo + _CHUNK]
            total += float(np.dot(diff, diff))
    return 0.5 * m * total


def proximal_gradient_np(params: Arrays, reference: Arrays, *, mu: float) -> dict[str, npt.NDArray[Any]]:
    """Gradient of FedProx's proximal term, ``mu (w - w_t)``, per array (Li et al., 2020).

    Parameters
    ----------
    params : Arrays
        The client's current parameters ``w`` (floating arrays).
    reference : Arrays
        The global model ``w_t`` received this round, with the same names and shapes.
    mu : float
        Proximal coefficient, >= 0.

    Returns
    -------
    dict[str, numpy.ndarray]
        New arrays in ``params``' order and dtypes (computed in float32 at least).

    Raises
    ------
    AggregationError
        If the names or shapes differ, an array is not floating, or ``mu`` is invalid.
    """
    m, pairs = _prox_pairs(params, reference, mu)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, w, ref in pairs:
        dtype = np.promote_types(w.dtype, np.float32)
        diff = w.astype(dtype) - ref.astype(dtype, copy=False)
        out[name] = (dtype.type(m) * diff).astype(w.dtype, copy=False)
    return out
