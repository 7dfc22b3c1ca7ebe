"""Client-level DP mechanisms for federated averaging: clipping, Gaussian noise, adaptive clipping, local DP.

Pure keyword-only functions on named arrays (one client's update, the model delta, as
``Mapping[str, np.ndarray]``). Nothing here keeps state or draws from a global generator: every function
that samples takes an injected :class:`numpy.random.Generator`, so a seeded run is reproducible and the
driver owns the randomness (and its state in the checkpoint).

References
----------
McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language Models", ICLR 2018
(DP-FedAvg): each sampled client's update is clipped to L2 norm ``C`` over the whole model, the clipped
updates are summed, Gaussian noise of standard deviation ``z * C`` is added to the sum, and the sum is
divided by a *fixed* denominator, the expected number of clients ``q * N`` (their estimator
:math:`\\tilde f_f`). The fixed denominator keeps the sensitivity of the released mean at ``C / (qN)``;
dividing by the actual count would make the scale depend on who took part. With fixed-size sampling the
count is public and the two coincide.

Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive Clipping",
NeurIPS 2021: the clip norm follows a target quantile ``gamma`` of the update norms by the geometric rule
``C <- C * exp(-eta * (b - gamma))``, where ``b`` is the noised fraction of clients whose update norm was
at most ``C``. The count gets its own Gaussian noise ``sigma_b``; to keep the overall privacy of noise
multiplier ``z`` the update noise uses ``z_delta = (z**-2 - (2 * sigma_b)**-2) ** -0.5`` (their Theorem 1).

Local DP: each client clips its update and adds the Gaussian noise itself before sending, so the server
never sees an unperturbed update. Two clipped updates differ by at most ``2C``, so the per-client
guarantee is that of the Gaussian mechanism with noise multiplier ``z / 2`` (Dwork and Roth, "The
Algorithmic Foundations of Differential Privacy", 2014, Theorem A.1 / the Gaussian mechanism).

Numerics: norms, scaling and noise are computed in float64 and cast back to each array's dtype, so a
clipped float32 update has norm at most ``C`` up to float32 rounding (a relative ``1e-6``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError

__all__ = [
    "Update",
    "adaptive_clip_norm",
    "adaptive_noise_multiplier",
    "add_gaussian_noise",
    "clip_update",
    "dp_fedavg",
    "global_norm",
    "local_dp_update",
    "noised_mean",
    "sum_updates",
]

#: One client's update (or a sum or mean of updates): arrays by name.
Update = Mapping[str, npt.NDArray[Any]]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if finite and positive (or zero when allowed), else raise ConfigError."""
    number = float(value)
    ok = math.isfinite(number) and (number >= 0 if allow_zero else number > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}: expected a finite number {bound}, got {value!r}")
    return number


def _check_floating(update: Update) -> None:
    """Refuse arrays that are not floating point: noise and clipping make no sense for integer buffers."""
    for name, array in update.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise ConfigError(
                f"update array {name!r}: expected a floating dtype, got {array.dtype}; "
                "pass only the trainable (floating) parameters to the DP mechanisms"
            )


def global_norm(update: Update) -> float:
    """The L2 norm of an update over all its arrays together (the model delta as one flat vector).

    Parameters
    ----------
    update
        Arrays by name.

    Returns
    -------
    float
        ``sqrt(sum of squares of every element)``, computed in float64.
    """
    _check_floating(update)
    total = 0.0
    for array in update.values():
        flat = np.asarray(array, dtype=np.float64).reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_update(update: Update, *, clip_norm: float) -> tuple[dict[str, npt.NDArray[Any]], float]:
    """Scale an update down to global L2 norm at most ``clip_norm`` (McMahan et al. 2018).

    ``clipped = update * min(1, clip_norm / ||update||)``: the direction is kept, and an update already
    within the bound is returned unchanged (as copies).

    Parameters
    ----------
    update
        One client's update, arrays by name (floating dtypes).
    clip_norm
        The bound ``C > 0``.

    Returns
    -------
    tuple
        ``(clipped, norm)``: the clipped arrays (each in its input dtype) and the norm *before* clipping
        (what adaptive clipping counts).
    """
    bound = _positive("clip_norm", clip_norm)
    norm = global_norm(update)
    factor = 1.0 if norm <= bound else bound / norm
    clipped = {
        name: (np.asarray(array, dtype=np.float64) * factor).astype(array.dtype, copy=False)
        if factor != 1.0
        else np.array(array, copy=True)
        for name, array in update.items()
    }
    return clipped, norm


def sum_updates(updates: Sequence[Update]) -> dict[str, npt.NDArray[np.float64]]:
    """Sum updates with identical names and shapes in float64.

    Parameters
    ----------
    updates
        One or more updates with the same names and shapes.

    Returns
    -------
    dict
        The float64 sum, array by array.
    """
    if not updates:
        raise ConfigError("updates: expected at least one update, got none")
    first = updates[0]
    out = {name: np.zeros(np.shape(array), dtype=np.float64) for name, array in first.items()}
    for index, update in enumerate(updates):
        if update.keys() != first.keys():
            raise ConfigError(
                f"updates[{index}]: expected arrays {sorted(first)}, got {sorted(update)}"
            )
        for name, array in update.items():
            if np.shape(array) != out[name].shape:
                raise ConfigError(
                    f"updates[{index}][{name!r}]: expected shape {out[name].shape}, got {np.shape(array)}"
                )
            out[name] += array
    return out


def add_gaussian_noise(
    arrays: Update, *, stddev: float, rng: np.random.Generator
) -> dict[str, npt.NDArray[Any]]:
    """Add i.i.d. ``N(0, stddev**2)`` noise to every element (the Gaussian mechanism).

    Parameters
    ----------
    arrays
        Arrays by name (floating dtypes); not modified.
    stddev
        Standard deviation of the noise, ``>= 0`` (0 adds nothing and draws nothing).
    rng
        The generator the noise is drawn from, array by array in the mapping's order.

    Returns
    -------
    dict
        New arrays, each in its input dtype (noise drawn and added in float64).
    """
    scale = _positive("stddev", stddev, allow_zero=True)
    _check_floating(arrays)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, array in arrays.items():
        if scale == 0.0:
            out[name] = np.array(array, copy=True)
            continue
        noise = rng.normal(0.0, scale, size=np.shape(array))
        out[name] = (np.asarray(array, dtype=np.float64) + noise).astype(array.dtype, copy=False)
    return out


def noised_mean(
    summed: Update,
    *,
    clip_norm: float,
    noise_multiplier: float,
    denominator: float,
    rng: np.random.Generator,
) -> dict[str, npt.NDArray[Any]]:
    """DP-FedAvg's release: the sum of clipped updates plus ``N(0, (z C)^2)``, divided by a fixed count.

    McMahan et al. 2018, the fixed-denominator estimator: pass ``denominator = q * N`` (the expected
    number of clients) under Poisson sampling, or the cohort size under fixed-size sampling. Never the
    number that actually arrived under Poisson sampling: that count is not private.

    Parameters
    ----------
    summed
        The sum of the round's clipped updates (see :func:`clip_update`, :func:`sum_updates`).
    clip_norm
        The clip norm ``C`` the updates were clipped to (the sum's sensitivity).
    noise_multiplier
        ``z``: the noise standard deviation on the sum is ``z * C``.
    denominator
        The fixed divisor, ``> 0``.
    rng
        The generator for the noise.

    Returns
    -------
    dict
        The noised mean, array by array (noise standard deviation ``z * C / denominator``).
    """
    bound = _positive("clip_norm", clip_norm)
    z = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    count = _positive("denominator", denominator)
    noised = add_gaussian_noise(summed, stddev=z * bound, rng=rng)
    return {
        name: (np.asarray(array, dtype=np.float64) / count).astype(array.dtype, copy=False)
        for name, array in noised.items()
    }


def dp_fedavg(
    updates: Sequence[Update],
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    rng: np.random.Generator,
) -> tuple[dict[str, npt.NDArray[Any]], list[float]]:
    """One round of DP-FedAvg with server-side fixed clipping (McMahan et al. 2018), all updates at once.

    Clip each update to ``C``, sum, add ``N(0, (z C)^2)`` per coordinate, divide by ``expected_clients``.
    A streaming driver does the same with :func:`clip_update` per arrival and :func:`noised_mean` at the
    end. With client-side clipping the server still calls :func:`clip_update` on what arrives: a no-op
    for an honest client, and the sensitivity bound then holds whatever a client sends.

    Parameters
    ----------
    updates
        The round's updates (model deltas), same names and shapes, floating dtypes.
    clip_norm
        ``C > 0``.
    noise_multiplier
        ``z >= 0``.
    expected_clients
        The fixed denominator (``q * N`` under Poisson sampling, the cohort size under fixed-size).
    rng
        The generator for the noise.

    Returns
    -------
    tuple
        ``(mean, norms)``: the noised mean in the dtype of the first update, and each update's norm
        before clipping.
    """
    clipped_and_norms = [clip_update(update, clip_norm=clip_norm) for update in updates]
    summed = sum_updates([clipped for clipped, _ in clipped_and_norms])
    mean = noised_mean(
        summed, clip_norm=clip_norm, noise_multiplier=noise_multiplier, denominator=expected_clients, rng=rng
    )
    first = updates[0] if updates else {}
    typed = {name: array.astype(first[name].dtype, copy=False) for name, array in mean.items()}
    return typed, [norm for _, norm in clipped_and_norms]


def adaptive_noise_multiplier(*, noise_multiplier: float, count_stddev: float) -> float:
    """The update noise multiplier that leaves room for the noised clipped-count (Andrew et al. 2021).

    The round releases two Gaussian queries: the sum of updates (sensitivity ``C``, noise ``z_delta C``)
    and the count of unclipped updates centred as ``b - 1/2`` (sensitivity ``1/2``, noise ``sigma_b``).
    Together they are as private as one Gaussian of multiplier ``z`` when
    ``z**-2 = z_delta**-2 + (2 sigma_b)**-2`` (Andrew et al. 2021, Theorem 1).

    Parameters
    ----------
    noise_multiplier
        The overall ``z > 0`` the accountant charges.
    count_stddev
        ``sigma_b``; must exceed ``z / 2``.

    Returns
    -------
    float
        ``z_delta = (z**-2 - (2 sigma_b)**-2) ** -0.5``.
    """
    z = _positive("noise_multiplier", noise_multiplier)
    sigma_b = _positive("count_stddev", count_stddev)
    rest = z**-2 - (2.0 * sigma_b) ** -2
    if rest <= 0:
        raise ConfigError(
            f"count_stddev: expected more than noise_multiplier / 2 = {z / 2:g} (else the count alone "
            f"spends the whole budget), got {count_stddev!r}"
        )
    return 1.0 / math.sqrt(rest)


def adaptive_clip_norm(
    *,
    clip_norm: float,
    unclipped_count: float,
    expected_clients: float,
    target_quantile: float,
    learning_rate: float,
    count_stddev: float,
    rng: np.random.Generator,
) -> float:
    """The next clip norm by the geometric quantile update of Andrew et al. 2021 (Algorithm 1).

    ``b = (unclipped_count + N(0, sigma_b^2)) / expected_clients`` and ``C <- C * exp(-eta (b - gamma))``.
    When more updates than ``gamma`` fit under ``C`` the norm shrinks, otherwise it grows, so ``C``
    tracks the ``gamma``-quantile of the update norms.

    Parameters
    ----------
    clip_norm
        The current ``C > 0``.
    unclipped_count
        The number of this round's updates with norm ``<= C`` (``sum of b_i``).
    expected_clients
        The fixed denominator (expected number of clients per round).
    target_quantile
        ``gamma`` in ``(0, 1)``.
    learning_rate
        ``eta > 0`` (the paper uses 0.2).
    count_stddev
        ``sigma_b >= 0`` (the paper suggests ``expected_clients / 20``).
    rng
        The generator for the count's noise.

    Returns
    -------
    float
        The clip norm for the next round.
    """
    bound = _positive("clip_norm", clip_norm)
    count = _positive("unclipped_count", unclipped_count, allow_zero=True)
    expected = _positive("expected_clients", expected_clients)
    gamma = float(target_quantile)
    if not 0.0 < gamma < 1.0:
        raise ConfigError(f"target_quantile: expected a number in (0, 1), got {target_quantile!r}")
    eta = _positive("learning_rate", learning_rate)
    sigma_b = _positive("count_stddev", count_stddev, allow_zero=True)
    noise = float(rng.normal(0.0, sigma_b)) if sigma_b > 0 else 0.0
    fraction = (count + noise) / expected
    return bound * math.exp(-eta * (fraction - gamma))


def local_dp_update(
    update: Update, *, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> dict[str, npt.NDArray[Any]]:
    """Local DP: a client clips its own update to ``C`` and adds ``N(0, (z C)^2)`` before sending.

    The server sees only this perturbed update. Any two clipped updates differ by at most ``2C``, so one
    release is the Gaussian mechanism with multiplier ``z / 2`` (the accountant's ``"local"`` scheme).

    Parameters
    ----------
    update
        The client's update, arrays by name.
    clip_norm
        ``C > 0``.
    noise_multiplier
        ``z >= 0``.
    rng
        The client's generator.

    Returns
    -------
    dict
        The clipped, noised update, each array in its input dtype.
    """
    clipped, _ = clip_update(update, clip_norm=clip_norm)
    z = _positive("noise_multiplier", noise_multiplier, allow_zero=True)
    return add_gaussian_noise(clipped, stddev=z * float(clip_norm), rng=rng)
