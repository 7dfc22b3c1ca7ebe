"""Configuration of client-level DP for a job: :class:`DPConfig` and :class:`AdaptiveClipping`.

Plain frozen dataclasses (no pydantic: this layer depends on numpy and ``dp_accounting`` only), validated
on construction. Each error names the field, the value and what is allowed, as a
:class:`~fedra.errors.ConfigError`; the job spec maps its ``[privacy]`` table onto
:meth:`DPConfig.from_mapping`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal, final, get_args

from fedra.errors import ConfigError
from fedra.privacy._accountant import Accountant, SamplingScheme, calibrate_noise

__all__ = ["AdaptiveClipping", "DPConfig", "DPMode"]

DPMode = Literal["server", "client", "local"]
_Backend = Literal["rdp", "pld"]
_Sampling = Literal["poisson", "fixed"]


def _number(name: str, value: object, *, low: float, high: float = math.inf, open_low: bool = True,
            open_high: bool = True) -> float:
    """``value`` as a float in the interval, or a ConfigError naming ``name``, the value and the interval."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = (number > low if open_low else number >= low) and (number < high if open_high else number <= high)
    if not ok:
        left = "(" if open_low else "["
        right = ")" if open_high else "]"
        raise ConfigError(f"{name}: expected a number in {left}{low:g}, {high:g}{right}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveClipping:
    """Adaptive clipping to a quantile of the update norms (Andrew et al. 2021).

    Attributes
    ----------
    target_quantile
        ``gamma`` in ``(0, 1)``: the fraction of updates meant to fit under the clip norm.
    learning_rate
        ``eta > 0`` of the geometric update (the paper uses 0.2).
    count_stddev
        ``sigma_b``, the noise on the count of unclipped updates; ``None`` for the paper's
        ``expected_clients / 20``.
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_stddev: float | None = None

    def __post_init__(self) -> None:
        _number("privacy.adaptive.target_quantile", self.target_quantile, low=0.0, high=1.0)
        _number("privacy.adaptive.learning_rate", self.learning_rate, low=0.0)
        if self.count_stddev is not None:
            _number("privacy.adaptive.count_stddev", self.count_stddev, low=0.0)

    def resolved_count_stddev(self, expected_clients: float) -> float:
        """``count_stddev``, or ``expected_clients / 20`` when unset."""
        return self.count_stddev if self.count_stddev is not None else expected_clients / 20.0


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class DPConfig:
    """Client-level differential privacy for a job.

    Attributes
    ----------
    clip_norm
        ``C > 0`` (the initial value with adaptive clipping).
    delta
        ``delta`` in ``(0, 1)`` the epsilon is reported at.
    noise_multiplier
        ``z >= 0``; exactly one of ``noise_multiplier`` and ``target_epsilon``.
    target_epsilon
        Calibrate ``z`` so the whole job spends at most this epsilon.
    adaptive
        Adaptive clipping, or ``None`` for a fixed ``clip_norm``.
    mode
        ``"server"``: the server clips and adds noise; ``"client"``: clients clip (the server never sees an
        unclipped update) and the server adds noise; ``"local"``: clients clip and add the noise.
    max_epsilon
        Stop the job before a round that would spend more than this; ``None``: no limit.
    accountant
        ``"rdp"`` or ``"pld"``.
    sampling
        ``"poisson"`` or ``"fixed"`` (a cohort of exactly ``clients_per_round``; RDP only).
    """

    clip_norm: float
    delta: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    adaptive: AdaptiveClipping | None = None
    mode: DPMode = "server"
    max_epsilon: float | None = None
    accountant: _Backend = "rdp"
    sampling: _Sampling = "poisson"

    def __post_init__(self) -> None:
        _number("privacy.clip_norm", self.clip_norm, low=0.0)
        _number("privacy.delta", self.delta, low=0.0, high=1.0)
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                "privacy.noise_multiplier, privacy.target_epsilon: expected exactly one of them, got "
                f"noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}"
            )
        if self.noise_multiplier is not None:
            _number("privacy.noise_multiplier", self.noise_multiplier, low=0.0, open_low=False)
        if self.target_epsilon is not None:
            _number("privacy.target_epsilon", self.target_epsilon, low=0.0)
        if self.max_epsilon is not None:
            _number("privacy.max_epsilon", self.max_epsilon, low=0.0)
        for name, value, allowed in (
            ("mode", self.mode, get_args(DPMode)),
            ("accountant", self.accountant, get_args(_Backend)),
            ("sampling", self.sampling, get_args(_Sampling)),
        ):
            if value not in allowed:
                raise ConfigError(f"privacy.{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        if self.adaptive is not None and not isinstance(self.adaptive, AdaptiveClipping):
            raise ConfigError(f"privacy.adaptive: expected an AdaptiveClipping or None, got {self.adaptive!r}")
        if self.adaptive is not None and self.mode == "local":
            raise ConfigError(
                "privacy.adaptive: expected no adaptive clipping with mode = 'local' (the clipped-count bit "
                "would be sent without local noise), got an adaptive table"
            )
        if self.accountant == "pld" and self.sampling == "fixed" and self.mode != "local":
            raise ConfigError(
                "privacy.accountant: expected 'rdp' with sampling = 'fixed' (dp_accounting's PLD accountant "
                "has no sampling without replacement), got 'pld'"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> DPConfig:
        """Build from a job spec's ``[privacy]`` table (``adaptive`` a nested table); unknown keys refused."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"privacy: expected keys among {sorted(known)}, got unknown {unknown}")
        values = dict(data)
        adaptive = values.get("adaptive")
        if isinstance(adaptive, Mapping):
            allowed = {field.name for field in fields(AdaptiveClipping)}
            extra = sorted(set(adaptive) - allowed)
            if extra:
                raise ConfigError(f"privacy.adaptive: expected keys among {sorted(allowed)}, got unknown {extra}")
            values["adaptive"] = AdaptiveClipping(**adaptive)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"privacy: {exc}") from exc

    @property
    def scheme(self) -> SamplingScheme:
        """The accountant's scheme: ``"local"`` in local mode, else the sampling."""
        return "local" if self.mode == "local" else self.sampling

    def make_accountant(self, *, population: int | None = None) -> Accountant:
        """A fresh :class:`Accountant` for this configuration (``population``: the number of clients)."""
        return Accountant(sampling=self.scheme, backend=self.accountant, population=population)

    def resolve_noise_multiplier(
        self,
        *,
        rounds: int,
        sampling_rate: float | None = None,
        clients_per_round: int | None = None,
        population: int | None = None,
    ) -> float:
        """``noise_multiplier``, or the one calibrated so ``rounds`` rounds spend at most ``target_epsilon``.

        Parameters
        ----------
        rounds
            The job's number of rounds.
        sampling_rate, clients_per_round, population
            The sampling, as for :meth:`Accountant.step` (ignored in local mode).
        """
        if self.noise_multiplier is not None:
            return self.noise_multiplier
        assert self.target_epsilon is not None
        local = self.scheme == "local"
        return calibrate_noise(
            target_epsilon=self.target_epsilon,
            delta=self.delta,
            steps=rounds,
            sampling=self.scheme,
            backend=self.accountant,
            sampling_rate=None if local else sampling_rate,
            clients_per_round=None if local else clients_per_round,
            population=population,
        )
