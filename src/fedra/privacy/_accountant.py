"""Privacy accounting for client-level DP-FedAvg, over Google's ``dp_accounting``.

The math is the library's (RDP: Mironov 2017, Mironov, Talwar and Zhang 2019 for the Poisson-sampled
Gaussian, Wang, Balle and Kasiviswanathan 2019 for sampling without replacement; PLD: Meiser and
Mohammadi 2018, Koskela et al. 2020, Doroshenko et al. 2022). This module only keeps the book: which
steps were taken, and the library's accountant to ask. Noise multipliers are always ``z = stddev / C``
for the noise on the *sum* of updates clipped to ``C``; the event each scheme composes states how
``z`` relates to the sensitivity under its neighbouring relation.

Schemes (``sampling``)
----------------------
``"poisson"``
    Each client takes part in a round independently with probability ``q`` (McMahan et al. 2018).
    Neighbours add or remove one client; the sum's sensitivity is ``C``:
    ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``. RDP or PLD.
``"fixed"``
    A cohort of exactly ``m`` of ``N`` clients, drawn without replacement. The library handles this only
    under the *replace-one* relation (``N`` public), with Wang, Balle and Kasiviswanathan's bound for
    sampling without replacement, so the accountant uses ``RdpAccountant(REPLACE_ONE)``. Replacing one
    client's clipped update moves the sum by up to ``2C``, so the event is
    ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))``. The library's PLD accountant has
    no sampling without replacement: PLD with fixed-size sampling is refused rather than approximated
    by Poisson sampling (which would under-count).
``"full"``
    Every client in every round (no amplification): ``GaussianDpEvent(z)`` under add/remove.
``"local"``
    Local DP, one client's own ledger: each release is its clipped update plus ``N(0, (zC)^2)``; two
    updates differ by up to ``2C``, so ``GaussianDpEvent(z / 2)``. No amplification by sampling (the
    client knows it took part); charge every round it takes part in.

State for the checkpoint is JSON (no pickle): the list of distinct steps with their repeat counts, replayed
into a fresh library accountant on restore, so a resumed run reports exactly the epsilon it had.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, final, get_args

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError, StateError

if TYPE_CHECKING:
    import dp_accounting

__all__ = ["DEFAULT_PLD_DISCRETIZATION", "Accountant", "Backend", "SamplingScheme", "calibrate_noise"]

Backend = Literal["rdp", "pld"]
SamplingScheme = Literal["poisson", "fixed", "full", "local"]

_FORMAT: Final = "fedra.privacy.accountant/1"
#: The library's default PLD discretisation: epsilon is an upper bound, accurate to about this much.
DEFAULT_PLD_DISCRETIZATION: Final = 1e-4


@dataclass(frozen=True, slots=True)
class _Step:
    """One kind of round: noise multiplier, sampling (rate or cohort size), how many times."""

    noise_multiplier: float
    sampling_rate: float | None
    cohort: int | None
    count: int

    def same_kind(self, other: _Step) -> bool:
        """True when only the count differs."""
        return (self.noise_multiplier, self.sampling_rate, self.cohort) == (
            other.noise_multiplier,
            other.sampling_rate,
            other.cohort,
        )


def _append(steps: tuple[_Step, ...], new: _Step) -> tuple[_Step, ...]:
    """``steps`` with ``new`` added: merged into the last group when only the count differs."""
    if steps and steps[-1].same_kind(new):
        last = steps[-1]
        merged = _Step(last.noise_multiplier, last.sampling_rate, last.cohort, last.count + new.count)
        return (*steps[:-1], merged)
    return (*steps, new)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_delta(delta: float) -> float:
    value = float(delta)
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ConfigError(f"delta: expected a number in (0, 1), got {delta!r}")
    return value


def _library_accountant(
    backend: Backend, sampling: SamplingScheme, pld_discretization: float
) -> dp_accounting.PrivacyAccountant:
    """A fresh ``dp_accounting`` accountant for the scheme (neighbouring relation chosen by the scheme)."""
    # dp_accounting (and scipy with it) loads only where accounting runs: a client never needs it
    import dp_accounting
    from dp_accounting import pld as dp_pld
    from dp_accounting import rdp as dp_rdp
    if backend == "rdp":
        relation = (
            dp_accounting.NeighboringRelation.REPLACE_ONE
            if sampling == "fixed"
            else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        )
        return dp_rdp.RdpAccountant(neighboring_relation=relation)
    if sampling == "fixed":
        raise ConfigError(
            "accountant: expected 'rdp' with fixed-size sampling (dp_accounting's PLD accountant has no "
            "sampling without replacement), got 'pld'; use accountant = 'rdp' or sampling = 'poisson'"
        )
    return dp_pld.PLDAccountant(value_discretization_interval=pld_discretization)


def _event(
    sampling: SamplingScheme, population: int | None, step: _Step
) -> dp_accounting.DpEvent:
    """The library event for ``step.count`` repetitions of one round under ``sampling``."""
    import dp_accounting
    z = step.noise_multiplier
    single: dp_accounting.DpEvent
    if z == 0.0:
        single = dp_accounting.NonPrivateDpEvent()
    elif sampling == "poisson":
        assert step.sampling_rate is not None
        single = dp_accounting.PoissonSampledDpEvent(step.sampling_rate, dp_accounting.GaussianDpEvent(z))
    elif sampling == "fixed":
        assert step.cohort is not None and population is not None
        single = dp_accounting.SampledWithoutReplacementDpEvent(
            population, step.cohort, dp_accounting.GaussianDpEvent(z / 2.0)
        )
    elif sampling == "full":
        single = dp_accounting.GaussianDpEvent(z)
    else:
        single = dp_accounting.GaussianDpEvent(z / 2.0)
    return single if step.count == 1 else dp_accounting.SelfComposedDpEvent(single, step.count)


def _make_step(
    sampling: SamplingScheme,
    population: int | None,
    *,
    noise_multiplier: float,
    sampling_rate: float | None,
    clients_per_round: int | None,
    count: int,
) -> _Step:
    """Validate one step's arguments for the scheme and normalise them."""
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z >= 0):
        raise ConfigError(f"noise_multiplier: expected a finite number >= 0, got {noise_multiplier!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count: expected an integer >= 1, got {count!r}")
    if sampling == "poisson":
        if (sampling_rate is None) == (clients_per_round is None):
            raise ConfigError(
                "sampling: expected exactly one of sampling_rate or clients_per_round (with the "
                f"accountant's population) for Poisson sampling, got sampling_rate={sampling_rate!r}, "
                f"clients_per_round={clients_per_round!r}"
            )
        if clients_per_round is not None:
            if population is None:
                raise ConfigError("population: expected the number of clients to turn clients_per_round "
                                  "into a sampling rate, got None")
            rate = _check_cohort(clients_per_round, population) / population
        else:
            rate = float(sampling_rate)  # type: ignore[arg-type]
            if not (math.isfinite(rate) and 0.0 < rate <= 1.0):
                raise ConfigError(f"sampling_rate: expected a number in (0, 1], got {sampling_rate!r}")
        return _Step(z, rate, None, count)
    if sampling == "fixed":
        if sampling_rate is not None or clients_per_round is None:
            raise ConfigError(
                "sampling: expected clients_per_round (and no sampling_rate) for fixed-size sampling, got "
                f"sampling_rate={sampling_rate!r}, clients_per_round={clients_per_round!r}"
            )
        if population is None:
            raise ConfigError("population: expected the number of clients for fixed-size sampling, got None")
        return _Step(z, None, _check_cohort(clients_per_round, population), count)
    if sampling_rate is not None or clients_per_round is not None:
        raise ConfigError(
            f"sampling: expected neither sampling_rate nor clients_per_round for the {sampling!r} scheme, "
            f"got sampling_rate={sampling_rate!r}, clients_per_round={clients_per_round!r}"
        )
    return _Step(z, None, None, count)


def _check_cohort(clients_per_round: int, population: int) -> int:
    if (
        isinstance(clients_per_round, bool)
        or not isinstance(clients_per_round, int)
        or not 1 <= clients_per_round <= population
    ):
        raise ConfigError(
            f"clients_per_round: expected an integer in [1, {population}] (the population), "
            f"got {clients_per_round!r}"
        )
    return clients_per_round


def _check_population(population: int | None) -> int | None:
    if population is not None and (
        isinstance(population, bool) or not isinstance(population, int) or population < 1
    ):
        raise ConfigError(f"population: expected an integer >= 1 or None, got {population!r}")
    return population


@final
class Accountant:
    """The privacy budget a job has spent, step by step; JSON state for the checkpoint.

    Parameters
    ----------
    sampling
        ``"poisson"``, ``"fixed"``, ``"full"`` or ``"local"`` (see the module docstring).
    backend
        ``"rdp"`` (Renyi DP, fast, a little loose) or ``"pld"`` (privacy loss distributions, tighter).
    population
        The number of clients ``N``: required for ``"fixed"``, and for ``"poisson"`` steps given as
        ``clients_per_round`` (``q = m / N``).
    pld_discretization
        The PLD accountant's value discretisation interval.

    Examples
    --------
    >>> acc = Accountant(sampling="poisson", backend="rdp")
    >>> acc.step(noise_multiplier=1.5, sampling_rate=0.04, count=2250)
    >>> round(acc.epsilon(1e-5), 3)
    7.329
    """

    def __init__(
        self,
        *,
        sampling: SamplingScheme = "poisson",
        backend: Backend = "rdp",
        population: int | None = None,
        pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
    ) -> None:
        _check_choice("sampling", sampling, get_args(SamplingScheme))
        _check_choice("accountant", backend, get_args(Backend))
        if not (math.isfinite(pld_discretization) and pld_discretization > 0):
            raise ConfigError(f"pld_discretization: expected a number > 0, got {pld_discretization!r}")
        self._sampling: SamplingScheme = sampling
        self._backend: Backend = backend
        self._population = _check_population(population)
        self._pld_discretization = float(pld_discretization)
        _library_accountant(backend, sampling, self._pld_discretization)  # refuses PLD with fixed-size
        self._steps: tuple[_Step, ...] = ()
        # epsilon is a pure function of the (compressed) history, so a resumed accountant reports bit
        # for bit what the original did. RDP: one library curve per kind of round, scaled by its count
        # and summed (what RdpAccountant does inside); PLD: the last history's library accountant.
        self._unit_rdp: dict[tuple[float, float | None, int | None], npt.NDArray[np.float64]] = {}
        self._orders: npt.NDArray[np.float64] | None = None
        self._cached: tuple[tuple[_Step, ...], dp_accounting.PrivacyAccountant] | None = None

    @property
    def sampling(self) -> SamplingScheme:
        """The sampling scheme."""
        return self._sampling

    @property
    def backend(self) -> Backend:
        """``"rdp"`` or ``"pld"``."""
        return self._backend

    @property
    def population(self) -> int | None:
        """The number of clients, if given."""
        return self._population

    @property
    def pld_discretization(self) -> float:
        """The PLD value discretisation interval."""
        return self._pld_discretization

    @property
    def steps(self) -> int:
        """How many rounds have been charged."""
        return sum(step.count for step in self._steps)

    def step(
        self,
        *,
        noise_multiplier: float,
        sampling_rate: float | None = None,
        clients_per_round: int | None = None,
        count: int = 1,
    ) -> None:
        """Charge ``count`` rounds of the Gaussian mechanism with ``noise_multiplier``.

        Parameters
        ----------
        noise_multiplier
            ``z = stddev / C`` of the noise added to the sum of clipped updates (0: no privacy).
        sampling_rate
            ``q`` for Poisson sampling.
        clients_per_round
            The cohort size ``m``: fixed-size sampling, or Poisson with ``q = m / N``.
        count
            How many identical rounds to charge.
        """
        new = _make_step(
            self._sampling,
            self._population,
            noise_multiplier=noise_multiplier,
            sampling_rate=sampling_rate,
            clients_per_round=clients_per_round,
            count=count,
        )
        self._steps = _append(self._steps, new)

    def epsilon(self, delta: float) -> float:
        """The epsilon spent so far at ``delta`` (0 before any step; ``inf`` after a step without noise)."""
        return self._epsilon(self._steps, _check_delta(delta))

    def epsilon_after(
        self,
        delta: float,
        *,
        noise_multiplier: float,
        sampling_rate: float | None = None,
        clients_per_round: int | None = None,
        count: int = 1,
    ) -> float:
        """The epsilon that would be spent after one more step like :meth:`step`'s; changes nothing."""
        candidate = _make_step(
            self._sampling,
            self._population,
            noise_multiplier=noise_multiplier,
            sampling_rate=sampling_rate,
            clients_per_round=clients_per_round,
            count=count,
        )
        return self._epsilon(_append(self._steps, candidate), _check_delta(delta))

    def would_exceed(
        self,
        max_epsilon: float,
        delta: float,
        *,
        noise_multiplier: float,
        sampling_rate: float | None = None,
        clients_per_round: int | None = None,
        count: int = 1,
    ) -> bool:
        """Whether the next step would take the spent epsilon above ``max_epsilon``: ask before a round.

        Parameters
        ----------
        max_epsilon
            The budget, ``> 0``.
        delta
            The delta the budget is stated at.
        noise_multiplier, sampling_rate, clients_per_round, count
            The round about to run, as for :meth:`step`.
        """
        budget = float(max_epsilon)
        if not (math.isfinite(budget) and budget > 0):
            raise ConfigError(f"max_epsilon: expected a finite number > 0, got {max_epsilon!r}")
        after = self.epsilon_after(
            delta,
            noise_multiplier=noise_multiplier,
            sampling_rate=sampling_rate,
            clients_per_round=clients_per_round,
            count=count,
        )
        return after > budget

    def _epsilon(self, steps: tuple[_Step, ...], delta: float) -> float:
        """Epsilon at ``delta`` after ``steps`` (a pure function of them)."""
        from dp_accounting import rdp as dp_rdp
        if self._backend == "rdp":
            total = np.zeros_like(self._rdp_orders())
            for step in steps:
                total += step.count * self._rdp_of_one(step)
            return float(dp_rdp.compute_epsilon(self._rdp_orders(), total, delta)[0])
        return float(self._pld(steps).get_epsilon(delta))

    def _rdp_orders(self) -> npt.NDArray[np.float64]:
        """The RDP orders of the library's accountant."""
        if self._orders is None:
            self._orders = np.asarray(self._fresh_rdp().orders, dtype=np.float64)
        return self._orders

    def _fresh_rdp(self) -> Any:
        return _library_accountant("rdp", self._sampling, self._pld_discretization)

    def _rdp_of_one(self, step: _Step) -> npt.NDArray[np.float64]:
        """The RDP curve of one round of ``step``'s kind (cached per kind)."""
        key = (step.noise_multiplier, step.sampling_rate, step.cohort)
        curve = self._unit_rdp.get(key)
        if curve is None:
            library = self._fresh_rdp()
            library.compose(_event(self._sampling, self._population, _Step(*key, count=1)))
            curve = self._unit_rdp[key] = np.asarray(library.rdp, dtype=np.float64)
        return curve

    def _pld(self, steps: tuple[_Step, ...]) -> dp_accounting.PrivacyAccountant:
        """The PLD accountant with ``steps`` composed, each group as one self-composition.

        Composing group by group (not round by round) keeps PLD fast (one convolution power per group)
        and makes the result depend on the history only. The last history is cached, so the usual
        ``would_exceed`` / ``step`` / ``epsilon`` sequence of a round composes once.
        """
        if self._cached is not None and self._cached[0] == steps:
            return self._cached[1]
        library = _library_accountant(self._backend, self._sampling, self._pld_discretization)
        for step in steps:
            library.compose(_event(self._sampling, self._population, step))
        self._cached = (steps, library)
        return library

    def to_bytes(self) -> bytes:
        """The state as UTF-8 JSON: the scheme and every distinct step with its count (floats exact)."""
        state: dict[str, Any] = {
            "format": _FORMAT,
            "sampling": self._sampling,
            "backend": self._backend,
            "population": self._population,
            "pld_discretization": self._pld_discretization,
            "steps": [[s.noise_multiplier, s.sampling_rate, s.cohort, s.count] for s in self._steps],
        }
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Accountant:
        """Restore an accountant from :meth:`to_bytes`: the same steps, so the same epsilon.

        Raises
        ------
        StateError
            If the bytes are not a fedra accountant state.
        """
        try:
            state = json.loads(data.decode())
            if not isinstance(state, dict) or state.get("format") != _FORMAT:
                raise ValueError(f"expected format {_FORMAT!r}")
            accountant = cls(
                sampling=state["sampling"],
                backend=state["backend"],
                population=state["population"],
                pld_discretization=state["pld_discretization"],
            )
            for noise, rate, cohort, count in state["steps"]:
                accountant.step(
                    noise_multiplier=noise,
                    sampling_rate=rate,
                    clients_per_round=cohort if accountant.sampling == "fixed" else None,
                    count=count,
                )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, ConfigError) as exc:
            raise StateError(
                f"accountant state: expected JSON written by Accountant.to_bytes ({_FORMAT}), "
                f"could not restore it: {exc}"
            ) from exc
        return accountant


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    steps: int,
    sampling: SamplingScheme = "poisson",
    backend: Backend = "rdp",
    sampling_rate: float | None = None,
    clients_per_round: int | None = None,
    population: int | None = None,
    tol: float = 1e-4,
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """The smallest noise multiplier (within ``tol``) whose epsilon after ``steps`` rounds is ``<= target``.

    Uses ``dp_accounting.calibrate_dp_mechanism`` (Brent's method, then a check that the returned value
    is on the private side), and checks the result again here: the returned ``z`` never overshoots the
    target epsilon.

    Parameters
    ----------
    target_epsilon
        The epsilon to stay within, ``> 0``.
    delta
        The delta, in ``(0, 1)``.
    steps
        The number of rounds, ``>= 1``.
    sampling, backend, sampling_rate, clients_per_round, population, pld_discretization
        As for :class:`Accountant` and :meth:`Accountant.step`; use the same ``pld_discretization`` as
        the accountant that will charge the job.
    tol
        The tolerance on ``z``.

    Returns
    -------
    float
        The noise multiplier ``z``.
    """
    import dp_accounting
    target = float(target_epsilon)
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"target_epsilon: expected a finite number > 0, got {target_epsilon!r}")
    checked_delta = _check_delta(delta)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps: expected an integer >= 1, got {steps!r}")
    probe = Accountant(
        sampling=sampling, backend=backend, population=population, pld_discretization=pld_discretization
    )
    template = _make_step(
        sampling,
        probe.population,
        noise_multiplier=1.0,
        sampling_rate=sampling_rate,
        clients_per_round=clients_per_round,
        count=steps,
    )

    def make_event(z: float) -> dp_accounting.DpEvent:
        step = _Step(float(z), template.sampling_rate, template.cohort, steps)
        return _event(sampling, population, step)

    def fresh() -> dp_accounting.PrivacyAccountant:
        return _library_accountant(backend, sampling, probe.pld_discretization)

    def spent(z: float) -> float:
        return float(fresh().compose(make_event(z)).get_epsilon(checked_delta))

    z = float(
        dp_accounting.calibrate_dp_mechanism(
            fresh,
            make_event,
            target,
            checked_delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(0.0, 1.0),
            tol=tol,
        )
    )
    # The library promises a non-positive gap; hold it to that (a few steps of tol at most).
    for _ in range(100):
        if spent(z) <= target:
            return z
        z += tol
    raise ConfigError(  # pragma: no cover - the library's own check makes this unreachable
        f"target_epsilon: could not find a noise multiplier within {target!r} at delta={delta!r}"
    )
