"""Anomaly detection over rounds: flag outlying updates, accumulate suspicion, quarantine repeat offenders.

Each round the driver scores the updates with :func:`fedra.aggregation.update_scores` (norm, cosine to
the aggregate, distance to the nearest peers). :class:`QuarantinePolicy` turns them into robust z-scores
(Iglewicz and Hoaglin's modified z-score, median and MAD over the round, so the outliers do not hide
themselves) and flags an update whose norm or peer distance is far above the round's median or whose
cosine is far below it. A client's suspicion decays geometrically and grows by one per flagged round
(a reputation in the spirit of FLDetector, Zhang et al., KDD 2022, which also quarantines clients whose
updates are repeatedly inconsistent); once it reaches the threshold the client is quarantined: excluded
from sampling for a number of rounds that grows with each repeat. A single noisy round of an honest
client does not quarantine it.

The policy is a frozen value; everything it remembers lives in :class:`ReputationState`, which
round-trips exactly through JSON (no pickle) for checkpoints. Every decision (quarantine, release) is a
:class:`QuarantineEvent` with the client, the scores and the reason, for the run's metrics;
:func:`quarantine_report` counts, given who was really malicious, the false quarantines of honest clients.

Per round the driver calls :meth:`QuarantinePolicy.begin_round` (releases whose time is up) before
sampling, excludes :meth:`ReputationState.quarantined` from the sample, and after aggregating calls
:meth:`QuarantinePolicy.observe` with the round's client ids and scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, final

import numpy as np

from fedra.aggregation import UpdateScores, robust_zscores
from fedra.errors import ConfigError, StateError

__all__ = [
    "QuarantineEvent",
    "QuarantinePolicy",
    "QuarantineReport",
    "ReputationState",
    "quarantine_report",
]

_STATE_VERSION = 1


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted(mapping.items())))


@final
@dataclass(frozen=True, slots=True)
class ReputationState:
    """What the quarantine policy remembers between rounds.

    Attributes
    ----------
    suspicion : Mapping[str, float]
        Per client, the decayed count of flagged rounds (absent: 0).
    quarantined_until : Mapping[str, int]
        Clients in quarantine, each with the first round it may be sampled again.
    quarantines : Mapping[str, int]
        Per client, how many times it has been quarantined (repeat quarantines last longer).
    """

    suspicion: Mapping[str, float] = field(default_factory=dict)
    quarantined_until: Mapping[str, int] = field(default_factory=dict)
    quarantines: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("suspicion", "quarantined_until", "quarantines"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def quarantined(self) -> frozenset[str]:
        """The clients to leave out of sampling now."""
        return frozenset(self.quarantined_until)

    def to_json(self) -> str:
        """The state as a JSON document (floats written exactly, keys sorted)."""
        return json.dumps(
            {
                "version": _STATE_VERSION,
                "suspicion": dict(self.suspicion),
                "quarantined_until": dict(self.quarantined_until),
                "quarantines": dict(self.quarantines),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ReputationState:
        """Restore a state written by :meth:`to_json`.

        Raises
        ------
        StateError
            If the document is not such a state.
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"reputation state: expected a JSON document, got {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
            found = data.get("version") if isinstance(data, dict) else type(data).__name__
            raise StateError(f"reputation state: expected version {_STATE_VERSION}, got {found!r}")

        def table(key: str, kind: type) -> dict[str, Any]:
            value = data.get(key)
            if not isinstance(value, dict):
                raise StateError(f"reputation state {key}: expected an object, got {value!r:.60}")
            for client, v in value.items():
                ok = isinstance(v, kind) and not isinstance(v, bool)
                if kind is float:
                    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                if not ok:
                    raise StateError(
                        f"reputation state {key}[{client!r}]: expected a {kind.__name__} >= 0, got {v!r}"
                    )
            return value

        return cls(
            suspicion={k: float(v) for k, v in table("suspicion", float).items()},
            quarantined_until=table("quarantined_until", int),
            quarantines=table("quarantines", int),
        )


@final
@dataclass(frozen=True, slots=True)
class QuarantineEvent:
    """One decision of the policy, for the run's metrics.

    Attributes
    ----------
    round : int
        The round in which it was taken.
    client : str
        The client concerned.
    action : {"quarantine", "release"}
        What was decided.
    reason : str
        Why, in words: the scores that were out of line and the suspicion that crossed the threshold.
    scores : Mapping[str, float]
        The client's scores this round (norm, cosine, peer_distance) and their robust z-scores; empty for
        a release.
    suspicion : float
        The client's suspicion after the decision.
    until : int or None
        For a quarantine, the first round the client may be sampled again.
    """

    round: int
    client: str
    action: Literal["quarantine", "release"]
    reason: str
    scores: Mapping[str, float]
    suspicion: float
    until: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a metrics line)."""
        return {
            "event": f"client_{self.action}",
            "round": self.round,
            "client": self.client,
            "reason": self.reason,
            "scores": dict(self.scores),
            "suspicion": self.suspicion,
            "until": self.until,
        }


def _check_number(name: str, value: object, *, low: float, high: float = math.inf,
                  low_open: bool = False) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    if not bad:
        assert isinstance(value, int | float)
        bad = value < low or (low_open and value == low) or value > high
    if bad:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
        raise ConfigError(f"quarantine.{name}: expected a number in {interval}, got {value!r}")


@final
@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    """When a client's updates are anomalous often enough to take it out of sampling for a while.

    Parameters
    ----------
    z_threshold : float
        An update is flagged when the robust z-score of its norm or peer distance is above this, or that of
        its cosine to the aggregate below minus this (3.5 is Iglewicz and Hoaglin's outlier cut-off).
    relative_floor : float
        Floor on the scale of the norm and peer-distance z-scores, as a fraction of the round's median, so
        that nearly identical honest updates do not turn tiny differences into huge z-scores.
    cosine_floor : float
        Floor on the scale of the cosine z-scores (cosines of honest updates can all be close to 1).
    decay : float
        Suspicion is multiplied by this each round the client takes part, in ``[0, 1)``, then grows by 1 if
        flagged.
    threshold : float
        Suspicion at which the client is quarantined (with the defaults, three flagged rounds in a row).
    quarantine_rounds : int
        Length of a first quarantine, in rounds.
    backoff : float
        Each further quarantine of the same client lasts ``backoff`` times longer (>= 1).
    min_updates : int
        Rounds with fewer updates are not scored: a median and a MAD of a handful mean little.
    """

    z_threshold: float = 3.5
    relative_floor: float = 0.05
    cosine_floor: float = 0.05
    decay: float = 0.8
    threshold: float = 2.0
    quarantine_rounds: int = 10
    backoff: float = 2.0
    min_updates: int = 5

    def __post_init__(self) -> None:
        _check_number("z_threshold", self.z_threshold, low=0.0, low_open=True)
        _check_number("relative_floor", self.relative_floor, low=0.0)
        _check_number("cosine_floor", self.cosine_floor, low=0.0)
        _check_number("decay", self.decay, low=0.0, high=1.0)
        if self.decay == 1.0:
            raise ConfigError(f"quarantine.decay: expected a number in [0, 1), got {self.decay!r}")
        _check_number("threshold", self.threshold, low=0.0, low_open=True)
        _check_number("backoff", self.backoff, low=1.0)
        for name in ("quarantine_rounds", "min_updates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"quarantine.{name}: expected an int >= 1, got {value!r}")

    def assess(self, scores: UpdateScores) -> tuple[list[dict[str, float]], list[list[str]]]:
        """Robust z-scores and the reasons each update is flagged (empty: not flagged).

        Parameters
        ----------
        scores : UpdateScores
            One round's scores.

        Returns
        -------
        tuple[list[dict[str, float]], list[list[str]]]
            Per update, its scores and z-scores (``norm``, ``cosine``, ``peer_distance``, ``z_norm``,
            ``z_cosine``, ``z_peer_distance``), and the reasons it is flagged.
        """
        medians = {
            "norm": float(np.median(scores.norm)),
            "peer_distance": float(np.median(scores.peer_distance)),
            "cosine": float(np.median(scores.cosine)),
        }
        z = {
            "norm": robust_zscores(scores.norm, min_scale=self.relative_floor * abs(medians["norm"])),
            "peer_distance": robust_zscores(
                scores.peer_distance, min_scale=self.relative_floor * abs(medians["peer_distance"])
            ),
            "cosine": robust_zscores(scores.cosine, min_scale=self.cosine_floor),
        }
        rows: list[dict[str, float]] = []
        reasons: list[list[str]] = []
        t = self.z_threshold
        for i in range(len(scores)):
            row = scores.row(i)
            row.update({f"z_{k}": float(v[i]) for k, v in z.items()})
            why: list[str] = []
            if z["norm"][i] > t:
                why.append(f"norm {row['norm']:.4g} is {z['norm'][i]:.1f} robust SDs above the round's "
                           f"median {medians['norm']:.4g}")
            if z["cosine"][i] < -t:
                why.append(f"cosine to the aggregate {row['cosine']:.3f} is {-z['cosine'][i]:.1f} robust "
                           f"SDs below the round's median {medians['cosine']:.3f}")
            if z["peer_distance"][i] > t:
                why.append(f"distance to peers {row['peer_distance']:.4g} is {z['peer_distance'][i]:.1f} "
                           f"robust SDs above the round's median {medians['peer_distance']:.4g}")
            rows.append(row)
            reasons.append(why)
        return rows, reasons

    def begin_round(
        self, state: ReputationState, *, round: int
    ) -> tuple[ReputationState, list[QuarantineEvent]]:
        """Release the clients whose quarantine ends by ``round``; call before sampling it.

        Returns
        -------
        tuple[ReputationState, list[QuarantineEvent]]
            The new state (released clients start again with suspicion 0) and one ``release`` event per
            released client, sorted by client id.
        """
        released = sorted(c for c, until in state.quarantined_until.items() if until <= round)
        if not released:
            return state, []
        until = {c: r for c, r in state.quarantined_until.items() if c not in released}
        suspicion = {c: s for c, s in state.suspicion.items() if c not in released}
        events = [
            QuarantineEvent(
                round=round, client=c, action="release",
                reason=f"quarantine ended (it was to last until round {state.quarantined_until[c]})",
                scores={}, suspicion=0.0,
            )
            for c in released
        ]
        return ReputationState(suspicion, until, state.quarantines), events

    def observe(
        self,
        state: ReputationState,
        *,
        round: int,
        client_ids: Sequence[str],
        scores: UpdateScores,
    ) -> tuple[ReputationState, list[QuarantineEvent]]:
        """Fold one round's scores into the suspicion; quarantine the clients that cross the threshold.

        Parameters
        ----------
        state : ReputationState
            The state after :meth:`begin_round` for this round.
        round : int
            The round just aggregated.
        client_ids : Sequence[str]
            The client of each scored update, in the order of ``scores``.
        scores : UpdateScores
            The round's scores.

        Returns
        -------
        tuple[ReputationState, list[QuarantineEvent]]
            The new state, and one ``quarantine`` event per client quarantined, in update order. A client
            already in quarantine (it should not have been sampled) is ignored.

        Raises
        ------
        ConfigError
            If ``client_ids`` does not give one unique id per score.
        """
        ids = list(client_ids)
        if len(ids) != len(scores) or len(set(ids)) != len(ids):
            raise ConfigError(
                f"client_ids: expected {len(scores)} unique ids (one per scored update), got {len(ids)} "
                f"with {len(set(ids))} unique"
            )
        if len(ids) < self.min_updates:
            return state, []
        rows, reasons = self.assess(scores)
        suspicion = dict(state.suspicion)
        until = dict(state.quarantined_until)
        counts = dict(state.quarantines)
        events: list[QuarantineEvent] = []
        for client, row, why in zip(ids, rows, reasons, strict=True):
            if client in until:
                continue
            s = self.decay * suspicion.get(client, 0.0) + (1.0 if why else 0.0)
            if s < self.threshold:
                if s > 0.0:
                    suspicion[client] = s
                else:
                    suspicion.pop(client, None)
                continue
            prior = counts.get(client, 0)
            length = math.ceil(self.quarantine_rounds * self.backoff ** prior)
            until[client] = round + 1 + length
            counts[client] = prior + 1
            suspicion[client] = s
            events.append(QuarantineEvent(
                round=round, client=client, action="quarantine",
                reason=(f"{'; '.join(why)}; suspicion {s:.2f} reached the threshold {self.threshold:g} "
                        f"(quarantine {prior + 1}, {length} rounds)"),
                scores=MappingProxyType(row), suspicion=s, until=until[client],
            ))
        return ReputationState(suspicion, until, counts), events


@final
@dataclass(frozen=True, slots=True)
class QuarantineReport:
    """How well the quarantines matched who was really malicious.

    Attributes
    ----------
    quarantined_malicious : tuple[str, ...]
        Malicious clients quarantined at least once.
    missed_malicious : tuple[str, ...]
        Malicious clients never quarantined.
    falsely_quarantined : tuple[str, ...]
        Honest clients quarantined at least once.
    false_quarantines : int
        Quarantine events against honest clients (a client quarantined twice counts twice).
    """

    quarantined_malicious: tuple[str, ...]
    missed_malicious: tuple[str, ...]
    falsely_quarantined: tuple[str, ...]
    false_quarantines: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the run's summary metrics)."""
        return {
            "quarantined_malicious": list(self.quarantined_malicious),
            "missed_malicious": list(self.missed_malicious),
            "falsely_quarantined": list(self.falsely_quarantined),
            "false_quarantines": self.false_quarantines,
        }


def quarantine_report(events: Iterable[QuarantineEvent], *, malicious: Iterable[str]) -> QuarantineReport:
    """Count true and false quarantines against the ground truth (known in simulation).

    Parameters
    ----------
    events : Iterable[QuarantineEvent]
        Every event of the run (releases are ignored).
    malicious : Iterable[str]
        The ids of the clients that really attacked.

    Returns
    -------
    QuarantineReport
        Client lists sorted by id.
    """
    bad = set(malicious)
    hits = [e.client for e in events if e.action == "quarantine"]
    caught = sorted({c for c in hits if c in bad})
    false = [c for c in hits if c not in bad]
    return QuarantineReport(
        quarantined_malicious=tuple(caught),
        missed_malicious=tuple(sorted(bad - set(caught))),
        falsely_quarantined=tuple(sorted(set(false))),
        false_quarantines=len(false),
    )
