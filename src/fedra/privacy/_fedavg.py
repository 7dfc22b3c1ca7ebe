"""The per-job bookkeeping of client-level DP-FedAvg: :class:`DPFedAvg`.

The math lives in :mod:`fedra.privacy._mechanisms` and the accounting in :mod:`fedra.privacy._accountant`;
this class holds what changes between rounds (the clip norm under adaptive clipping, the accountant) and
says in which order to call them, so the round driver only moves data:

1. before sampling a round: :meth:`DPFedAvg.can_run_round` (``False``: the next round would spend more
   than ``max_epsilon``; stop the job);
2. per reply: :meth:`DPFedAvg.prepare` (clip to the current norm; in ``"client"`` mode the client does
   this itself with :meth:`DPFedAvg.task_config`'s ``clip_norm`` and the server repeats it, a no-op
   for honest clients), then add the clipped update to the round's sum and count the unclipped ones;
3. at the end of the round: :meth:`DPFedAvg.finish_round` (noise, fixed denominator, the next clip
   norm, one accountant step), or :meth:`DPFedAvg.skip_round` when the round releases nothing (below
   the quorum), then :meth:`DPFedAvg.spent` for the round's ``(epsilon, delta)``;
4. in the checkpoint: :meth:`DPFedAvg.state_bytes`, restored with :meth:`DPFedAvg.load_state`.

In ``"local"`` mode the client calls :func:`~fedra.privacy._mechanisms.local_dp_update` with
:meth:`DPFedAvg.task_config`'s ``clip_norm`` and ``noise_multiplier``; the server averages what arrives
(divided by the number received: local noise does not rely on the server) and charges the per-client
``"local"`` ledger each round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError, StateError
from fedra.privacy._accountant import Accountant
from fedra.privacy._config import DPConfig
from fedra.privacy._mechanisms import (
    Update,
    adaptive_clip_norm,
    adaptive_noise_multiplier,
    clip_update,
    global_norm,
    noised_mean,
)

__all__ = ["DPFedAvg"]

_FORMAT: Final = "fedra.privacy.dpfedavg/1"


def _add_scaled(total: npt.NDArray[np.float64], array: npt.NDArray[Any], factor: float) -> None:
    """``total += factor * array`` in place: BLAS axpy (one fused pass) for contiguous float64 arrays."""
    if array.dtype == np.float64 and total.flags.c_contiguous and array.flags.c_contiguous and array.size:
        from scipy.linalg import blas

        # a reshaped view of a contiguous array shares its memory, so axpy writes into ``total``
        blas.daxpy(array.reshape(-1), total.reshape(-1), a=factor)
    elif factor == 1.0:
        np.add(total, array, out=total)
    else:
        np.add(total, np.multiply(array, factor, dtype=np.float64), out=total)


@final
class DPFedAvg:
    """Client-level DP for one job: the clip norm, the noise, the accountant, in round order.

    Parameters
    ----------
    config
        The job's :class:`~fedra.privacy._config.DPConfig`.
    rounds
        The job's number of rounds (to calibrate ``target_epsilon``).
    population
        The number of clients ``N``.
    clients_per_round
        The cohort size (fixed-size sampling) or the expected one (Poisson, ``q = m / N``).
    sampling_rate
        ``q`` for Poisson sampling, instead of ``clients_per_round``.
    """

    def __init__(
        self,
        config: DPConfig,
        *,
        rounds: int,
        population: int,
        clients_per_round: int | None = None,
        sampling_rate: float | None = None,
    ) -> None:
        if isinstance(population, bool) or not isinstance(population, int) or population < 1:
            raise ConfigError(f"population: expected an integer >= 1, got {population!r}")
        self._config = config
        self._population = population
        local = config.mode == "local"
        if config.sampling == "fixed" or (clients_per_round is not None and sampling_rate is None):
            if clients_per_round is None or sampling_rate is not None:
                raise ConfigError(
                    "clients_per_round: expected the cohort size (and no sampling_rate) for fixed-size "
                    f"sampling, got clients_per_round={clients_per_round!r}, sampling_rate={sampling_rate!r}"
                )
            expected = float(clients_per_round)
        elif sampling_rate is not None and clients_per_round is None:
            expected = float(sampling_rate) * population
        else:
            raise ConfigError(
                "sampling: expected exactly one of clients_per_round or sampling_rate, got "
                f"clients_per_round={clients_per_round!r}, sampling_rate={sampling_rate!r}"
            )
        self._step_args: dict[str, Any] = (
            {}
            if local
            else {"clients_per_round": clients_per_round}
            if sampling_rate is None
            else {"sampling_rate": sampling_rate}
        )
        self._accountant = config.make_accountant(population=population)
        self._accountant.epsilon_after(config.delta, noise_multiplier=1.0, **self._step_args)  # validates
        self._noise_multiplier = config.resolve_noise_multiplier(
            rounds=rounds, population=population, **self._step_args
        )
        self._expected_clients = expected
        self._clip_norm = float(config.clip_norm)
        adaptive = config.adaptive
        self._count_stddev = adaptive.resolved_count_stddev(expected) if adaptive is not None else 0.0
        self._update_noise_multiplier = (
            adaptive_noise_multiplier(noise_multiplier=self._noise_multiplier, count_stddev=self._count_stddev)
            if adaptive is not None and self._noise_multiplier > 0
            else self._noise_multiplier
        )

    @property
    def config(self) -> DPConfig:
        """The configuration."""
        return self._config

    @property
    def clip_norm(self) -> float:
        """The current clip norm ``C``."""
        return self._clip_norm

    @property
    def noise_multiplier(self) -> float:
        """``z`` the accountant charges per round (resolved from ``target_epsilon`` when given)."""
        return self._noise_multiplier

    @property
    def update_noise_multiplier(self) -> float:
        """The multiplier of the noise on the sum of updates (``z_delta`` with adaptive clipping, else ``z``)."""
        return self._update_noise_multiplier

    @property
    def expected_clients(self) -> float:
        """The fixed denominator (``q N`` or the cohort size)."""
        return self._expected_clients

    @property
    def accountant(self) -> Accountant:
        """The accountant (read it; :meth:`finish_round` steps it)."""
        return self._accountant

    def task_config(self) -> dict[str, float]:
        """What a client needs in ``"client"`` and ``"local"`` mode: the clip norm (and the local noise)."""
        if self._config.mode == "local":
            return {"clip_norm": self._clip_norm, "noise_multiplier": self._noise_multiplier}
        return {"clip_norm": self._clip_norm}

    def can_run_round(self) -> bool:
        """``False`` when one more round would spend more than ``max_epsilon`` (always ``True`` without one)."""
        if self._config.max_epsilon is None:
            return True
        return not self._accountant.would_exceed(
            self._config.max_epsilon, self._config.delta, noise_multiplier=self._noise_multiplier, **self._step_args
        )

    def prepare(self, update: Update) -> tuple[dict[str, npt.NDArray[Any]], bool]:
        """Clip one reply to the current norm; also whether it was within the norm (adaptive clipping's bit).

        In ``"local"`` mode the update is already clipped and noised by the client: returned as is.
        """
        if self._config.mode == "local":
            return {name: np.asarray(array) for name, array in update.items()}, True
        clipped, norm = clip_update(update, clip_norm=self._clip_norm)
        return clipped, norm <= self._clip_norm

    def accumulate(self, summed: Mapping[str, npt.NDArray[np.float64]], update: Update) -> bool:
        """Add :meth:`prepare`'s clipped update into ``summed`` in place; whether it was within the norm.

        The streaming form of ``prepare`` then a sum, for the round driver: it copies nothing, and adds
        with one fused multiply-add (BLAS ``axpy``) per contiguous float64 array, so a clipped update's
        contribution may differ from ``prepare``'s rounded product in the last bit (the same inputs
        always give the same bits). ``summed`` holds float64 arrays with the update's names and shapes.
        """
        if self._config.mode == "local":
            for name, array in update.items():
                _add_scaled(summed[name], np.asarray(array), 1.0)
            return True
        norm = global_norm(update)
        # the same factor as clip_update: an update within the bound is added unscaled
        factor = 1.0 if norm <= self._clip_norm else self._clip_norm / norm
        for name, array in update.items():
            _add_scaled(summed[name], np.asarray(array), factor)
        return norm <= self._clip_norm

    def finish_round(
        self,
        summed: Update,
        *,
        received: int,
        unclipped_count: int,
        rng: np.random.Generator,
    ) -> dict[str, npt.NDArray[Any]]:
        """Release the round's mean, move the clip norm, charge the accountant.

        Parameters
        ----------
        summed
            The sum of the round's :meth:`prepare`-d updates.
        received
            How many updates were summed (used as the denominator in ``"local"`` mode only).
        unclipped_count
            How many of them :meth:`prepare` reported within the norm (used with adaptive clipping).
        rng
            The generator for the noise (the driver's, whose state is checkpointed).

        Returns
        -------
        dict
            The noised mean update.
        """
        if self._config.mode == "local":
            if received < 1:
                raise ConfigError(f"received: expected at least one update in local mode, got {received!r}")
            mean = {
                name: (np.asarray(array, dtype=np.float64) / received).astype(array.dtype, copy=False)
                for name, array in summed.items()
            }
        else:
            mean = noised_mean(
                summed,
                clip_norm=self._clip_norm,
                noise_multiplier=self._update_noise_multiplier,
                denominator=self._expected_clients,
                rng=rng,
            )
            adaptive = self._config.adaptive
            if adaptive is not None:
                self._clip_norm = adaptive_clip_norm(
                    clip_norm=self._clip_norm,
                    unclipped_count=unclipped_count,
                    expected_clients=self._expected_clients,
                    target_quantile=adaptive.target_quantile,
                    learning_rate=adaptive.learning_rate,
                    count_stddev=self._count_stddev,
                    rng=rng,
                )
        self._accountant.step(noise_multiplier=self._noise_multiplier, **self._step_args)
        return mean

    def charge_distributed_round(self, *, noise_multiplier: float) -> None:
        """Charge one round whose noise the clients added themselves (secure aggregation).

        Under secure aggregation the server never holds the sum without noise, so it cannot add any:
        each client adds a share (see :mod:`fedra.runtime` and :func:`fedra.secagg.add_ring_noise`) and
        the round's effective multiplier depends on how many shares survived. The caller computes it;
        it must be at least a fraction of the nominal one the budget was planned with (it is at least
        the nominal one when the survivors are at least the shares the noise was split into).

        Raises
        ------
        ConfigError
            In ``"server"`` or ``"local"`` mode, with adaptive clipping, or for a multiplier that is not
            finite and positive.
        """
        if self._config.mode != "client" or self._config.adaptive is not None:
            raise ConfigError(
                f"distributed noise: expected mode 'client' without adaptive clipping, got mode "
                f"{self._config.mode!r}{' with adaptive clipping' if self._config.adaptive else ''}")
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ConfigError(f"noise_multiplier: expected a finite number > 0, got {noise_multiplier!r}")
        self._accountant.step(noise_multiplier=noise_multiplier, **self._step_args)

    def skip_round(self) -> None:
        """Charge one round whose release was dropped (e.g. too few replies for the quorum).

        Whether a round reached its quorum depends on who was sampled, so a dropped round is charged like
        a released one (conservative); the clip norm stays as it is, and no noise is drawn.
        """
        self._accountant.step(noise_multiplier=self._noise_multiplier, **self._step_args)

    def epsilon(self) -> float:
        """The epsilon spent so far at the configured delta."""
        return self._accountant.epsilon(self._config.delta)

    def spent(self) -> tuple[float, float]:
        """``(epsilon, delta)`` spent so far: what each round reports."""
        return self.epsilon(), self._config.delta

    def state_bytes(self) -> bytes:
        """What changes between rounds, as JSON: the clip norm, the noise multiplier, the accountant."""
        state = {
            "format": _FORMAT,
            "clip_norm": self._clip_norm,
            "noise_multiplier": self._noise_multiplier,
            "accountant": json.loads(self._accountant.to_bytes()),
        }
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode()

    def load_state(self, data: bytes) -> None:
        """Restore :meth:`state_bytes` (into an instance built from the same job spec).

        Raises
        ------
        StateError
            If the bytes are not a DPFedAvg state, or were written for another noise multiplier.
        """
        try:
            state = json.loads(data.decode())
            if not isinstance(state, dict) or state.get("format") != _FORMAT:
                raise ValueError(f"expected format {_FORMAT!r}")
            clip_norm = float(state["clip_norm"])
            if not (math.isfinite(clip_norm) and clip_norm > 0):
                raise ValueError(f"clip_norm {clip_norm!r} is not a finite number > 0")
            accountant = Accountant.from_bytes(json.dumps(state["accountant"]).encode())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise StateError(f"DP state: expected JSON written by DPFedAvg.state_bytes ({_FORMAT}): {exc}") from exc
        if state["noise_multiplier"] != self._noise_multiplier:
            raise StateError(
                f"DP state: expected noise_multiplier {self._noise_multiplier!r} (this job spec), got "
                f"{state['noise_multiplier']!r}; resume with the job spec the checkpoint was written with"
            )
        if (accountant.sampling, accountant.backend) != (self._accountant.sampling, self._accountant.backend):
            raise StateError(
                f"DP state: expected a {self._accountant.sampling}/{self._accountant.backend} accountant, got "
                f"{accountant.sampling}/{accountant.backend}"
            )
        self._clip_norm = clip_norm
        self._accountant = accountant
