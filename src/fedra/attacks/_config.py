"""Attack configuration: which kind, how many malicious clients, which parameters; and the registry.

A job spec names an attack as a kind, the fraction of clients that are malicious and the kind's
parameters. :class:`AttackConfig` validates them when built (naming the field, the value and what is
allowed); :data:`ATTACKS` maps every kind to its :class:`AttackKind` (what it poisons, whether the
attackers collude, its parameters and defaults); :func:`select_malicious` picks the malicious clients
deterministically from a seed; :func:`apply_model_attack` and :func:`apply_data_attack` run the configured
attack with the round's context.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, final

import numpy as np
import numpy.typing as npt

from fedra.aggregation import Arrays
from fedra.attacks._data_poisoning import flip_labels
from fedra.attacks._model_poisoning import (
    PERTURBATIONS,
    alie,
    gaussian_noise,
    ipm,
    min_max,
    min_sum,
    scale,
    sign_flip,
)
from fedra.errors import ConfigError

__all__ = [
    "ATTACKS",
    "AttackConfig",
    "AttackKind",
    "apply_data_attack",
    "apply_model_attack",
    "select_malicious",
]

ParamValue: TypeAlias = float | int | str
_Update = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class _Round:
    """What an attack may know about the round it runs in."""

    malicious: Sequence[Arrays]
    honest: Sequence[Arrays] | None
    num_clients: int
    rng: np.random.Generator


ModelAttack: TypeAlias = Callable[[_Round, Mapping[str, ParamValue]], list[_Update]]


@final
@dataclass(frozen=True, slots=True)
class AttackKind:
    """One kind of attack in :data:`ATTACKS`.

    Attributes
    ----------
    name : str
        The kind's name in job specs.
    target : {"model", "data"}
        What it poisons: the update sent (model) or the labels trained on (data).
    colludes : bool
        Whether the paper's threat model lets the attackers use the round's honest updates.
    defaults : Mapping[str, float | int | str]
        Every parameter the kind takes, with its default.
    choices : Mapping[str, tuple[str, ...]]
        For string parameters, the allowed values.
    citation : str
        The paper.
    """

    name: str
    target: Literal["model", "data"]
    colludes: bool
    defaults: Mapping[str, ParamValue]
    citation: str
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    run: ModelAttack | None = None


def _positive(params: Mapping[str, ParamValue], name: str) -> float:
    value = params[name]
    assert isinstance(value, int | float)  # checked by AttackConfig
    return float(value)


def _boosted(updates: list[_Update], factor: float) -> list[_Update]:
    """Each update's floating arrays times ``factor`` (unchanged when it is 1)."""
    if factor == 1.0:
        return updates
    return [{n: (a * factor).astype(a.dtype) if a.dtype.kind == "f" else a for n, a in u.items()}
            for u in updates]


def _kinds() -> Mapping[str, AttackKind]:
    def perturbation(params: Mapping[str, ParamValue]) -> Any:
        return params["perturbation"]

    kinds = [
        AttackKind(
            # magnitude 1 is the paper's -u; a larger one (-m u, as in Karimireddy et al.'s bit-flipping
            # experiments with boosted updates) makes 20% of attackers outweigh the honest majority's mean
            "sign_flip", "model", False, {"magnitude": 1.0}, "Li et al., AAAI 2019",
            run=lambda r, p: _boosted(sign_flip(r.malicious), _positive(p, "magnitude")),
        ),
        AttackKind(
            "gaussian_noise", "model", False, {"sigma": 1.0}, "Blanchard et al., NeurIPS 2017",
            run=lambda r, p: gaussian_noise(r.malicious, sigma=_positive(p, "sigma"), rng=r.rng),
        ),
        AttackKind(
            "scale", "model", False, {"server_lr": 1.0}, "Bagdasaryan et al., AISTATS 2020",
            run=lambda r, p: scale(
                r.malicious, num_clients=r.num_clients, server_lr=_positive(p, "server_lr")
            ),
        ),
        AttackKind(
            "label_flip", "data", False, {"fraction_flipped": 1.0},
            "Tolpegin et al., ESORICS 2020; Fang et al., USENIX Security 2020",
        ),
        AttackKind(
            "alie", "model", True, {}, "Baruch et al., NeurIPS 2019",
            run=lambda r, p: alie(r.malicious, num_clients=r.num_clients, honest=r.honest),
        ),
        AttackKind(
            "ipm", "model", True, {"epsilon": 0.1}, "Xie et al., UAI 2019",
            run=lambda r, p: ipm(r.malicious, epsilon=_positive(p, "epsilon"), honest=r.honest),
        ),
        AttackKind(
            "min_max", "model", True, {"perturbation": "std"}, "Shejwalkar and Houmansadr, NDSS 2021",
            choices={"perturbation": PERTURBATIONS},
            run=lambda r, p: min_max(r.malicious, honest=r.honest, perturbation=perturbation(p)),
        ),
        AttackKind(
            "min_sum", "model", True, {"perturbation": "std"}, "Shejwalkar and Houmansadr, NDSS 2021",
            choices={"perturbation": PERTURBATIONS},
            run=lambda r, p: min_sum(r.malicious, honest=r.honest, perturbation=perturbation(p)),
        ),
    ]
    return MappingProxyType({k.name: k for k in kinds})


#: Every attack kind by name.
ATTACKS: Final[Mapping[str, AttackKind]] = _kinds()


@final
@dataclass(frozen=True, slots=True)
class AttackConfig:
    """An attack as a job spec states it: the kind, the fraction of malicious clients, the parameters.

    Parameters
    ----------
    kind : str
        A key of :data:`ATTACKS`.
    fraction : float
        Share of the clients that are malicious, in ``[0, 1)``; :func:`select_malicious` rounds down.
    params : Mapping[str, float | int | str]
        The kind's parameters; missing ones take the kind's defaults (see :attr:`resolved`).
    collude : bool
        Whether the attackers see the round's honest updates, where the kind's threat model allows it.

    Raises
    ------
    ConfigError
        Naming the field (``attack.kind``, ``attack.fraction``, ``attack.params.<name>``), the value and
        what is allowed.
    """

    kind: str
    fraction: float
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    collude: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ConfigError(
                f"attack.kind: expected one of {', '.join(sorted(ATTACKS))}, got {self.kind!r}"
            )
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not (math.isfinite(f) and 0 <= f < 1):
            raise ConfigError(f"attack.fraction: expected a number in [0, 1), got {f!r}")
        if not isinstance(self.collude, bool):
            raise ConfigError(f"attack.collude: expected true or false, got {self.collude!r}")
        spec = ATTACKS[self.kind]
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"attack.params: expected a table, got {type(self.params).__name__}")
        for name, value in self.params.items():
            what = f"attack.params.{name}"
            if name not in spec.defaults:
                allowed = ", ".join(sorted(spec.defaults)) or "none"
                raise ConfigError(
                    f"{what}: expected a parameter of attack {self.kind!r} ({allowed}), got {name!r}"
                )
            if name in spec.choices:
                if value not in spec.choices[name]:
                    raise ConfigError(
                        f"{what}: expected one of {', '.join(spec.choices[name])}, got {value!r}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{what}: expected a finite number, got {value!r}")
            if name == "fraction_flipped":
                if not 0 <= value <= 1:
                    raise ConfigError(f"{what}: expected a number in [0, 1], got {value!r}")
            elif value <= 0:
                raise ConfigError(f"{what}: expected a number > 0, got {value!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def resolved(self) -> dict[str, ParamValue]:
        """Every parameter of the kind: those given, then the defaults for the rest."""
        return {**ATTACKS[self.kind].defaults, **self.params}

    @property
    def target(self) -> Literal["model", "data"]:
        """What the attack poisons: the update (``"model"``) or the training labels (``"data"``)."""
        return ATTACKS[self.kind].target


def select_malicious(client_ids: Sequence[str], *, fraction: float, seed: int) -> list[str]:
    """Pick ``floor(fraction * N)`` of the ``N`` clients as malicious, deterministically.

    Parameters
    ----------
    client_ids : Sequence[str]
        Every client of the federation (unique ids); their order does not matter.
    fraction : float
        Share of malicious clients, in ``[0, 1)``.
    seed : int
        The run's seed: the same seed and the same set of ids give the same choice.

    Returns
    -------
    list[str]
        The malicious clients' ids, sorted.

    Raises
    ------
    ConfigError
        If the ids are not unique strings, ``fraction`` is out of range or ``seed`` is not an int >= 0.
    """
    ids = sorted(client_ids)
    if any(not isinstance(c, str) for c in ids) or len(set(ids)) != len(ids):
        raise ConfigError("client_ids: expected unique str client ids, got duplicates or non-strings")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"attack.fraction: expected a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an int >= 0, got {seed!r}")
    # The small epsilon keeps 0.3 * 10 at 3 despite 0.3 being slightly less than 3/10 in binary.
    count = math.floor(fraction * len(ids) + 1e-9)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xA77AC])))
    chosen = rng.choice(len(ids), size=count, replace=False)
    return sorted(ids[int(i)] for i in chosen)


def apply_model_attack(
    config: AttackConfig,
    *,
    malicious: Sequence[Arrays],
    honest: Sequence[Arrays] | None,
    num_clients: int,
    rng: np.random.Generator,
) -> list[_Update]:
    """Run a model-poisoning attack on the malicious clients' updates of one round.

    Parameters
    ----------
    config : AttackConfig
        A ``"model"`` attack.
    malicious : Sequence[Arrays]
        The malicious clients' own updates this round, in task order.
    honest : Sequence[Arrays] or None
        The round's honest updates; passed on only if the kind colludes and ``config.collude`` is set.
    num_clients : int
        Clients aggregated this round, attackers included.
    rng : numpy.random.Generator
        For randomised attacks; seed it from the round so the run is reproducible.

    Returns
    -------
    list[dict[str, numpy.ndarray]]
        The updates the malicious clients send instead, in the same order.

    Raises
    ------
    ConfigError
        If the attack poisons data, not models, or its parameters do not fit the round.
    AggregationError
        If the updates are invalid.
    """
    kind = ATTACKS[config.kind]
    if kind.run is None:
        raise ConfigError(
            f"attack.kind: expected a model-poisoning attack here, got {config.kind!r}, which poisons "
            "training data; apply it on the client with apply_data_attack"
        )
    knows = honest if (kind.colludes and config.collude) else None
    return kind.run(_Round(malicious, knows, num_clients, rng), config.resolved)


def apply_data_attack(
    config: AttackConfig,
    *,
    labels: npt.ArrayLike,
    num_classes: int,
    rng: np.random.Generator,
) -> npt.NDArray[Any]:
    """Run a data-poisoning attack on a malicious client's labels before it trains.

    Parameters
    ----------
    config : AttackConfig
        A ``"data"`` attack (``label_flip``).
    labels : array_like
        The client's integer training labels.
    num_classes : int
        The number of classes.
    rng : numpy.random.Generator
        Chooses which labels flip when ``fraction_flipped < 1``.

    Returns
    -------
    numpy.ndarray
        The poisoned labels.

    Raises
    ------
    ConfigError
        If the attack poisons models, not data, or the labels are invalid.
    """
    if ATTACKS[config.kind].target != "data":
        raise ConfigError(
            f"attack.kind: expected a data-poisoning attack here, got {config.kind!r}, which poisons "
            "updates; apply it to the round's updates with apply_model_attack"
        )
    fraction = config.resolved["fraction_flipped"]
    assert isinstance(fraction, int | float)
    return flip_labels(labels, num_classes=num_classes, fraction=float(fraction), rng=rng)
