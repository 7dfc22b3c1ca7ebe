"""One-run privacy auditing (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run",
NeurIPS 2023), and a canary-client experiment on fedra's own DP-FedAvg mechanism.

The audit: ``m`` canaries are each included in the run independently with probability 1/2. After the
run an auditor scores every canary, guesses "in" for the ``k_in`` highest scores and "out" for the
``k_out`` lowest, abstains on the rest, and counts ``v`` correct guesses out of ``r = k_in + k_out``.
If the mechanism is ``(eps, delta)``-DP then (their Theorem 5.2, computed as in their appendix)

    P[V >= v] <= P[Binomial(r, p) >= v] + 2 m delta * max_{1<=i<=v} P[v > Binomial(r, p) >= v - i] / i,

with ``p = e^eps / (1 + e^eps)``. The largest ``eps`` whose bound is below ``1 - confidence`` is a lower
bound on the mechanism's epsilon at that confidence: an accountant's epsilon below it is refuted.

The numbers of guesses must be fixed before looking at the outcome (choosing the best ``r`` afterwards
is a multiple comparison the bound does not cover).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, final

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError
from fedra.privacy._mechanisms import clip_update, noised_mean, sum_updates

__all__ = [
    "AuditResult",
    "audit_epsilon_lower_bound",
    "audit_p_value",
    "canary_audit",
    "one_run_audit",
]


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    if not 0 <= correct <= guesses <= canaries:
        raise ConfigError(
            "audit counts: expected 0 <= correct <= guesses <= canaries, got "
            f"correct={correct!r}, guesses={guesses!r}, canaries={canaries!r}"
        )


def audit_p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """The probability of at least ``correct`` right guesses if the mechanism were ``(epsilon, delta)``-DP.

    Steinke, Nasr and Jagielski 2023, Theorem 5.2 (with ``delta``), as computed in their appendix.

    Parameters
    ----------
    canaries
        ``m``, the number of canaries (each included with probability 1/2).
    guesses
        ``r``, the guesses made (abstentions excluded).
    correct
        ``v``, the correct guesses.
    epsilon, delta
        The null hypothesis ``(epsilon, delta)``-DP.

    Returns
    -------
    float
        The p-value bound, in ``[0, 1]``.
    """
    from scipy import stats  # here, not at the top: importing fedra.privacy must not load scipy

    _check_counts(canaries, guesses, correct)
    if not (epsilon >= 0 and 0 <= delta <= 1):
        raise ConfigError(f"epsilon, delta: expected epsilon >= 0 and 0 <= delta <= 1, got {epsilon!r}, {delta!r}")
    if correct == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon)) if math.isfinite(epsilon) else 1.0
    beta = float(stats.binom.sf(correct - 1, guesses, p))
    # cumulative[i-1] = P[v > B >= v - i] for i = 1..v
    cumulative = np.cumsum(stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, p))
    alpha = float(np.max(cumulative / np.arange(1, correct + 1)))
    return min(1.0, beta + alpha * delta * 2 * canaries)


def audit_epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float, confidence: float = 0.95, tol: float = 1e-6
) -> float:
    """The largest epsilon the audit refutes at ``confidence``: a lower bound on the true epsilon.

    Bisection on :func:`audit_p_value`, which grows with epsilon; 0 when nothing is refuted.

    Parameters
    ----------
    canaries, guesses, correct
        As for :func:`audit_p_value`.
    delta
        The delta of the claim being audited.
    confidence
        In ``(0, 1)``; the bound holds with this probability over the canaries' inclusion.
    tol
        The bisection's tolerance on epsilon (the result errs low).

    Returns
    -------
    float
        ``eps_lb >= 0``.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    level = 1.0 - confidence

    def refuted(eps: float) -> bool:
        return audit_p_value(canaries=canaries, guesses=guesses, correct=correct, epsilon=eps, delta=delta) < level

    if not refuted(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while refuted(high):
        low, high = high, 2.0 * high
        if high > 1e4:  # pragma: no cover - needs astronomically many canaries
            return low
    while high - low > tol:
        middle = 0.5 * (low + high)
        if refuted(middle):
            low = middle
        else:
            high = middle
    return low


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class AuditResult:
    """The outcome of a one-run audit.

    Attributes
    ----------
    canaries
        ``m``.
    guesses
        ``r``.
    correct
        ``v``.
    epsilon_lower_bound
        The epsilon refuted at ``confidence`` (for the claim's ``delta``).
    confidence, delta
        What the bound was computed at.
    """

    canaries: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    confidence: float
    delta: float


def one_run_audit(
    *,
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    guesses_in: int,
    guesses_out: int,
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """Guess membership from scores (top ``guesses_in`` in, bottom ``guesses_out`` out) and bound epsilon.

    Parameters
    ----------
    scores
        One score per canary; higher means "more likely included".
    included
        Whether each canary was included (the audit's coin flips).
    guesses_in, guesses_out
        How many "in" and "out" guesses to make, fixed in advance.
    delta, confidence
        As for :func:`audit_epsilon_lower_bound`.

    Returns
    -------
    AuditResult
        The counts and the lower bound.
    """
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    member = np.asarray(included, dtype=bool).reshape(-1)
    m = score.size
    if member.size != m:
        raise ConfigError(f"included: expected {m} flags (one per score), got {member.size}")
    if guesses_in < 0 or guesses_out < 0 or guesses_in + guesses_out > m:
        raise ConfigError(
            f"guesses_in, guesses_out: expected non-negative counts summing to at most {m}, "
            f"got {guesses_in!r}, {guesses_out!r}"
        )
    order = np.argsort(score, kind="stable")
    correct = int(np.sum(~member[order[:guesses_out]])) + int(np.sum(member[order[m - guesses_in :]]))
    r = guesses_in + guesses_out
    bound = audit_epsilon_lower_bound(canaries=m, guesses=r, correct=correct, delta=delta, confidence=confidence)
    return AuditResult(
        canaries=m, guesses=r, correct=correct, epsilon_lower_bound=bound, confidence=confidence, delta=delta
    )


def canary_audit(
    *,
    canaries: int,
    clients: int,
    rounds: int,
    noise_multiplier: float,
    clip_norm: float,
    rng: np.random.Generator,
    guesses: int,
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """Audit fedra's DP-FedAvg round (clip, sum, noise, fixed denominator) with canary clients, in one run.

    A white-box experiment in numpy, no training: the model is a vector of ``canaries + 16`` coordinates.
    Every round each of ``clients`` ordinary clients sends a random update (Gaussian direction, norm
    uniform in ``[0, 2C]``, then clipped) and each included canary ``i`` sends ``2C e_i`` (clipped to
    ``C e_i``). The server releases :func:`~fedra.privacy._mechanisms.noised_mean` with every client in
    every round (the accountant's ``"full"`` scheme, ``rounds`` steps). The auditor's score for canary
    ``i`` is coordinate ``i`` summed over the released rounds; it guesses ``guesses / 2`` in and
    ``guesses / 2`` out.

    Parameters
    ----------
    canaries
        ``m``, each included with probability 1/2.
    clients
        Ordinary clients per round.
    rounds
        Rounds released.
    noise_multiplier, clip_norm
        The mechanism's ``z`` and ``C``.
    rng
        Draws the coin flips, the ordinary updates and the noise.
    guesses
        ``r`` (even, at most ``canaries``).
    delta, confidence
        As for :func:`audit_epsilon_lower_bound`.

    Returns
    -------
    AuditResult
        The audit of this run.
    """
    if guesses % 2 or not 0 < guesses <= canaries:
        raise ConfigError(f"guesses: expected an even number in (0, {canaries}], got {guesses!r}")
    dimension = canaries + 16
    included = rng.random(canaries) < 0.5
    denominator = float(clients + canaries / 2)  # the expected number of participants
    scores = np.zeros(canaries)
    for _ in range(rounds):
        updates: list[dict[str, npt.NDArray[Any]]] = []
        for _ in range(clients):
            direction = rng.standard_normal(dimension)
            direction *= rng.uniform(0.0, 2.0 * clip_norm) / np.linalg.norm(direction)
            updates.append({"w": direction})
        for index in np.flatnonzero(included):
            canary = np.zeros(dimension)
            canary[index] = 2.0 * clip_norm
            updates.append({"w": canary})
        summed = sum_updates([clip_update(update, clip_norm=clip_norm)[0] for update in updates])
        released = noised_mean(
            summed, clip_norm=clip_norm, noise_multiplier=noise_multiplier, denominator=denominator, rng=rng
        )
        scores += released["w"][:canaries]
    half = guesses // 2
    return one_run_audit(
        scores=scores, included=included, guesses_in=half, guesses_out=half, delta=delta, confidence=confidence
    )
