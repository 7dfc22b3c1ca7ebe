"""Model-poisoning attacks: what malicious clients send instead of their honest updates.

Pure functions on updates (each client's model minus the global model it started from), in the
conventions of :mod:`fedra.aggregation`: each takes the malicious clients' own honest updates and, where
the paper's threat model lets the attackers collude with full knowledge, the round's honest updates
(``honest``); without them the attackers estimate the honest statistics from their own updates (the
papers' partial-knowledge variants). Randomness comes only from an injected ``numpy.random.Generator``.

Only floating arrays are attacked; integer and bool arrays (such as BatchNorm's ``num_batches_tracked``)
keep each attacker's own values. Statistics are over the whole update (every floating array), in float64,
and results are cast back to each array's dtype. The collusion attacks hold the updates as one
``(clients, parameters)`` float64 matrix.

- :func:`sign_flip`: ``-u`` (the sign-flipping attack of Li et al., "RSA: Byzantine-Robust Stochastic
  Aggregation Methods", AAAI 2019; Damaskinos et al., 2018).
- :func:`gaussian_noise`: ``N(0, sigma^2)`` vectors in place of updates (the Gaussian Byzantine workers of
  Blanchard et al., NeurIPS 2017).
- :func:`scale`: model replacement, the update boosted by ``gamma = n / eta`` (Bagdasaryan, Veit, Hua,
  Estrin and Shmatikov, "How To Backdoor Federated Learning", AISTATS 2020).
- :func:`alie`: "A Little Is Enough" (Baruch, Baruch and Goldberg, NeurIPS 2019), ``mu - z_max sigma`` per
  coordinate.
- :func:`ipm`: inner-product manipulation (Xie, Koyejo and Gupta, "Fall of Empires: Breaking
  Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2019), ``-epsilon`` times the honest mean.
- :func:`min_max`, :func:`min_sum`: Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing
  Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedra.aggregation import Arrays
from fedra.aggregation._defences import check_reference
from fedra.aggregation._mean import cast_back, check_updates
from fedra.errors import ConfigError

__all__ = [
    "alie",
    "alie_z",
    "gaussian_noise",
    "ipm",
    "min_max",
    "min_sum",
    "scale",
    "sign_flip",
]

Perturbation = Literal["unit", "std", "sign"]
PERTURBATIONS: tuple[str, ...] = ("unit", "std", "sign")

_Update = dict[str, npt.NDArray[Any]]


def _number(value: object, *, what: str, positive: bool) -> float:
    """``value`` as a finite float, > 0 if ``positive`` else >= 0."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{what}: expected a finite number {bound}, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        raise ConfigError(f"{what}: expected a finite number {bound}, got {x!r}")
    return x


def _groups(
    malicious: Sequence[Arrays], honest: Sequence[Arrays] | None
) -> tuple[list[_Update], list[_Update] | None]:
    """Check the attackers' updates and the honest ones (if any) against the first attacker's."""
    own = check_updates(malicious)
    if honest is None:
        return own, None
    others = check_updates(honest)
    for i, update in enumerate(others):
        check_reference(update, own[0], what=f"honest update {i}")
    return own, others


def _float_names(like: _Update) -> list[str]:
    return [name for name, a in like.items() if a.dtype.kind == "f"]


def _matrix(updates: list[_Update], names: list[str]) -> npt.NDArray[np.float64]:
    """The floating arrays of ``updates`` as rows of one float64 matrix."""
    if not names:
        return np.zeros((len(updates), 0))
    return np.stack([
        np.concatenate([np.asarray(u[n], dtype=np.float64).reshape(-1) for n in names]) for u in updates
    ])


def _rebuild(vector: npt.NDArray[np.float64], own: _Update, names: list[str]) -> _Update:
    """``own`` with its floating arrays replaced by the pieces of ``vector``."""
    out = {name: np.array(a, copy=True) for name, a in own.items()}
    lo = 0
    for name in names:
        like = own[name]
        hi = lo + like.size
        out[name] = cast_back(np.array(vector[lo:hi]), like.dtype).reshape(like.shape)
        lo = hi
    return out


def sign_flip(malicious: Sequence[Arrays]) -> list[_Update]:
    """Send ``-u`` instead of the honest update ``u`` (sign flipping; Li et al., AAAI 2019).

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The attackers' own updates.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        One poisoned update per attacker, in order: every floating array negated.

    Raises
    ------
    AggregationError
        If the updates are invalid.
    """
    own, _ = _groups(malicious, None)
    return [
        {name: np.negative(a) if a.dtype.kind == "f" else np.array(a, copy=True) for name, a in u.items()}
        for u in own
    ]


def gaussian_noise(
    malicious: Sequence[Arrays], *, sigma: float, rng: np.random.Generator
) -> list[_Update]:
    """Send ``N(0, sigma^2)`` noise instead of updates (Gaussian Byzantine workers; Blanchard et al., 2017).

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The attackers' own updates (only their names, shapes and dtypes are used).
    sigma : float
        Standard deviation of the noise, finite and > 0.
    rng : numpy.random.Generator
        The source of the noise: drawn attacker by attacker, array by array, in order.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        One update of independent noise per attacker, in each floating array's dtype.

    Raises
    ------
    AggregationError
        If the updates are invalid.
    ConfigError
        If ``sigma`` is not a finite number > 0.
    """
    own, _ = _groups(malicious, None)
    std = _number(sigma, what="sigma", positive=True)
    out: list[_Update] = []
    for u in own:
        out.append({
            name: rng.normal(0.0, std, size=a.shape).astype(a.dtype) if a.dtype.kind == "f"
            else np.array(a, copy=True)
            for name, a in u.items()
        })
    return out


def scale(malicious: Sequence[Arrays], *, num_clients: int, server_lr: float = 1.0) -> list[_Update]:
    """Model replacement: boost the update by ``gamma = n / eta`` (Bagdasaryan et al., AISTATS 2020).

    With FedAvg over ``n`` clients and server learning rate ``eta``, the global model moves by
    ``eta / n`` times the sum of the updates; an attacker that sends its (backdoored) update times
    ``n / eta`` replaces the global model with its own when the other updates roughly cancel.

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The attackers' own (for a backdoor: trained on poisoned data) updates.
    num_clients : int
        ``n``, the number of clients aggregated in the round, >= 1.
    server_lr : float
        ``eta``, the server's learning rate (1 for plain FedAvg), finite and > 0.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        One update per attacker: every floating array times ``num_clients / server_lr``.

    Raises
    ------
    AggregationError
        If the updates are invalid.
    ConfigError
        If ``num_clients`` or ``server_lr`` is out of range.
    """
    own, _ = _groups(malicious, None)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer) or num_clients < 1:
        raise ConfigError(f"num_clients: expected an int >= 1, got {num_clients!r}")
    gamma = int(num_clients) / _number(server_lr, what="server_lr", positive=True)
    return [
        {
            name: cast_back(np.asarray(a, dtype=np.float64) * gamma, a.dtype) if a.dtype.kind == "f"
            else np.array(a, copy=True)
            for name, a in u.items()
        }
        for u in own
    ]


def alie_z(*, num_clients: int, num_byzantine: int) -> float:
    """The ``z_max`` of "A Little Is Enough" (Baruch et al., NeurIPS 2019).

    With ``n`` clients of which ``f`` collude, ``s = floor(n / 2 + 1) - f`` honest clients must be won over
    for the attackers to hold a majority, and ``z_max = Phi^{-1}((n - s) / n)``, ``Phi`` the standard normal
    CDF: the largest shift (in standard deviations) that still leaves ``s`` honest updates farther from the
    mean than the attackers are.

    Parameters
    ----------
    num_clients : int
        ``n``, clients in the round (attackers included), >= 2.
    num_byzantine : int
        ``f``, the colluding attackers, in ``[1, floor(n / 2)]`` so that ``s >= 1``.

    Returns
    -------
    float
        ``z_max`` (0 when ``(n - s) / n = 1/2``).

    Raises
    ------
    ConfigError
        If ``n`` or ``f`` is out of range.

    Examples
    --------
    >>> round(alie_z(num_clients=50, num_byzantine=12), 4)  # s = 14, Phi^{-1}(0.72)
    0.5828
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer) or num_clients < 2:
        raise ConfigError(f"num_clients: expected an int >= 2, got {num_clients!r}")
    n = int(num_clients)
    if (
        isinstance(num_byzantine, bool)
        or not isinstance(num_byzantine, int | np.integer)
        or not 1 <= num_byzantine <= n // 2
    ):
        raise ConfigError(
            f"num_byzantine: expected an int in [1, {n // 2}] for n={n}, got {num_byzantine!r}"
        )
    s = math.floor(n / 2 + 1) - int(num_byzantine)
    return NormalDist().inv_cdf((n - s) / n)


def alie(
    malicious: Sequence[Arrays], *, num_clients: int, honest: Sequence[Arrays] | None = None
) -> list[_Update]:
    """"A Little Is Enough": ``mu - z_max sigma`` per coordinate (Baruch et al., NeurIPS 2019).

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The ``f`` attackers' own updates.
    num_clients : int
        ``n``, clients in the round (attackers included); gives :func:`alie_z`.
    honest : Sequence[Arrays] or None
        The round's honest updates, if the attackers collude with full knowledge; otherwise the mean
        ``mu`` and standard deviation ``sigma`` are estimated from the attackers' own updates (the paper's
        setting: the attackers' own benign gradients).

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        The same poisoned update for every attacker (integer and bool arrays their own): per coordinate
        ``mu_j - z_max sigma_j``, with ``sigma`` the population standard deviation of the reference set.

    Raises
    ------
    AggregationError
        If the updates are invalid.
    ConfigError
        If ``num_clients`` and the number of attackers are out of :func:`alie_z`'s range.
    """
    own, others = _groups(malicious, honest)
    z = alie_z(num_clients=num_clients, num_byzantine=len(own))
    names = _float_names(own[0])
    reference = _matrix(others if others is not None else own, names)
    poisoned = reference.mean(axis=0) - z * reference.std(axis=0)
    return [_rebuild(poisoned, u, names) for u in own]


def ipm(
    malicious: Sequence[Arrays], *, epsilon: float, honest: Sequence[Arrays] | None = None
) -> list[_Update]:
    """Inner-product manipulation: ``-epsilon`` times the honest mean (Xie, Koyejo and Gupta, UAI 2019).

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The attackers' own updates.
    epsilon : float
        ``epsilon`` > 0: small (0.1) to slip past median and Krum, large (100) against the mean.
    honest : Sequence[Arrays] or None
        The round's honest updates (the paper's omniscient attackers); without them the attackers use the
        mean of their own updates.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        The same update for every attacker: ``-epsilon * mean``, whose inner product with the honest mean is
        ``-epsilon ||mean||^2 <= 0``.

    Raises
    ------
    AggregationError
        If the updates are invalid.
    ConfigError
        If ``epsilon`` is not a finite number > 0.
    """
    own, others = _groups(malicious, honest)
    eps = _number(epsilon, what="epsilon", positive=True)
    names = _float_names(own[0])
    mean = _matrix(others if others is not None else own, names).mean(axis=0)
    return [_rebuild(-eps * mean, u, names) for u in own]


def _perturbation(reference: npt.NDArray[np.float64], kind: str) -> npt.NDArray[np.float64]:
    """Shejwalkar and Houmansadr's perturbation directions: inverse unit vector, inverse std, inverse sign."""
    mean = reference.mean(axis=0)
    if kind == "unit":
        norm = float(np.sqrt(mean @ mean))
        return -mean / norm if norm > 0 else np.zeros_like(mean)
    if kind == "std":
        return np.asarray(-reference.std(axis=0), dtype=np.float64)
    if kind == "sign":
        return np.asarray(-np.sign(mean), dtype=np.float64)
    raise ConfigError(f"perturbation: expected one of {', '.join(PERTURBATIONS)}, got {kind!r}")


def _largest_gamma(a: float, b: float, c: float) -> float:
    """Largest ``gamma >= 0`` with ``a gamma^2 + 2 b gamma + c <= 0``, given ``a > 0`` and ``c <= 0``."""
    root = (-b + math.sqrt(max(b * b - a * c, 0.0))) / a
    return max(root, 0.0)


def _optimised(
    malicious: Sequence[Arrays],
    honest: Sequence[Arrays] | None,
    perturbation: str,
    objective: Literal["max", "sum"],
) -> list[_Update]:
    """Shared body of :func:`min_max` and :func:`min_sum`."""
    if perturbation not in PERTURBATIONS:
        raise ConfigError(
            f"perturbation: expected one of {', '.join(PERTURBATIONS)}, got {perturbation!r}"
        )
    own, others = _groups(malicious, honest)
    names = _float_names(own[0])
    reference = _matrix(others if others is not None else own, names)
    mean = reference.mean(axis=0)
    p = _perturbation(reference, perturbation)
    pp = float(p @ p)
    if pp == 0.0:  # one reference update (std 0) or a zero mean: nothing to push along
        return [_rebuild(mean, u, names) for u in own]
    gram = reference @ reference.T
    sq = np.diag(gram)
    pairwise = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    diffs = mean - reference  # (m, d): mu - r_i
    c = np.einsum("ij,ij->i", diffs, diffs)  # ||mu - r_i||^2
    b = diffs @ p  # <mu - r_i, p>
    # ||mu + gamma p - r_i||^2 = c_i + 2 gamma b_i + gamma^2 ||p||^2 is quadratic in gamma, so the largest
    # gamma the paper's binary search converges to is a root, computed here exactly.
    if objective == "max":
        bound = float(pairwise.max())
        gamma = min(_largest_gamma(pp, float(bi), float(ci) - bound) for bi, ci in zip(b, c, strict=True))
    else:
        bound = float(pairwise.sum(axis=1).max())
        gamma = _largest_gamma(len(c) * pp, float(b.sum()), float(c.sum()) - bound)
    # Stay on the feasible side of the root despite rounding.
    gamma *= 1.0 - 1e-9
    return [_rebuild(mean + gamma * p, u, names) for u in own]


def min_max(
    malicious: Sequence[Arrays],
    *,
    honest: Sequence[Arrays] | None = None,
    perturbation: Perturbation = "std",
) -> list[_Update]:
    """Min-max attack (Shejwalkar and Houmansadr, NDSS 2021).

    The poisoned update is ``mu + gamma p`` for the reference mean ``mu`` and a perturbation direction
    ``p``, with the largest ``gamma`` such that its largest distance to any reference update is at most the
    largest distance between two reference updates: it is never farther from the honest updates than they
    are from each other, which distance-based defences cannot tell apart.

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The attackers' own updates.
    honest : Sequence[Arrays] or None
        The round's honest updates (full knowledge, the paper's AGR-agnostic attacker); without them the
        reference set is the attackers' own updates.
    perturbation : {"unit", "std", "sign"}
        ``p``: the inverse unit vector ``-mu / ||mu||``, the inverse standard deviation ``-std`` (the
        paper's most effective), or the inverse sign ``-sign(mu)``.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        The same poisoned update for every attacker (integer and bool arrays their own).

    Raises
    ------
    AggregationError
        If the updates are invalid.
    ConfigError
        If ``perturbation`` is not one of the three.

    Notes
    -----
    The paper finds ``gamma`` by binary search. The constraint ``||mu + gamma p - r_i||^2 <= D^2`` is
    quadratic in ``gamma`` and holds at ``gamma = 0`` (``mu`` lies in the hull of the reference set), so
    the feasible set is an interval ``[0, gamma*]``; ``gamma*`` is computed here in closed form, the limit
    the search converges to, minus a relative ``1e-9`` to stay feasible under rounding.
    """
    return _optimised(malicious, honest, perturbation, "max")


def min_sum(
    malicious: Sequence[Arrays],
    *,
    honest: Sequence[Arrays] | None = None,
    perturbation: Perturbation = "std",
) -> list[_Update]:
    """Min-sum attack (Shejwalkar and Houmansadr, NDSS 2021).

    As :func:`min_max`, with the constraint that the sum of squared distances from ``mu + gamma p`` to the
    reference updates is at most the largest such sum of any reference update to the others.

    Parameters
    ----------
    malicious : Sequence[Arrays]
        The attackers' own updates.
    honest : Sequence[Arrays] or None
        The round's honest updates (full knowledge); without them the attackers' own.
    perturbation : {"unit", "std", "sign"}
        The direction ``p``, as for :func:`min_max`.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        The same poisoned update for every attacker (integer and bool arrays their own).

    Raises
    ------
    AggregationError
        If the updates are invalid.
    ConfigError
        If ``perturbation`` is not one of the three.
    """
    return _optimised(malicious, honest, perturbation, "sum")
