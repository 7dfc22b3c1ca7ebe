"""What the driver reports: one record per round, and the observer protocol that receives them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["Observer", "RoundRecord", "RunInfo"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Facts about a run, known before its first round."""

    rounds: int
    start_round: int
    num_clients: int
    num_parameters: int
    model_bytes: int


@dataclass(slots=True)
class RoundRecord:
    """Everything measured about one round. ``failures`` maps a reason to how many replies had it."""

    round: int
    sampled: int = 0
    replies: int = 0
    accepted: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    completed: bool = False
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    num_examples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: clients whose update was accepted, in arrival order
    participants: list[str] = field(default_factory=list)
    #: with differential privacy: the (epsilon, delta) spent by the job so far, after this round
    epsilon: float | None = None
    delta: float | None = None
    #: with differential privacy: the clip norm the next round uses (adaptive clipping moves it)
    clip_norm: float | None = None
    #: why the job stops after this round before its last one (e.g. the privacy budget), else None
    stop_reason: str | None = None
    #: replies the transport discarded during this round because their own round had closed
    #: (stragglers from an earlier round, or replies to no task in progress); None when there were none
    late_replies: int | None = None
    #: updates folded ahead of an earlier task that had not answered yet, because the transport could
    #: not spare more buffers (``Transport.reorder_window``): the sum's rounding then depends on the order
    #: the replies came in; None when there were none
    folded_ahead: int | None = None
    #: with a quarantine policy: its decisions this round (QuarantineEvent.to_dict()), else None
    events: list[dict[str, Any]] | None = None
    #: under secure aggregation: survivors, dropped, the server's protocol seconds (all and unmasking),
    #: and with distributed DP the effective noise multiplier charged; else None
    secagg: dict[str, Any] | None = None

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def to_json(self) -> dict[str, Any]:
        """The record as a dict; the optional fields (privacy, stop) only when set.

        Leaving unset optional fields out keeps the metrics lines of a run without privacy exactly as
        they were before these fields existed.
        """
        out = asdict(self)
        for key in _OPTIONAL:
            if out[key] is None:
                del out[key]
        return out


_OPTIONAL = ("epsilon", "delta", "clip_norm", "stop_reason", "late_replies", "folded_ahead", "events", "secagg")


class Observer(Protocol):
    """Receives the driver's events. Observers must not raise; the driver logs and ignores it if they do."""

    def on_run_start(self, info: RunInfo) -> None: ...

    def on_round_end(self, record: RoundRecord) -> None: ...

    def on_run_end(self, records: list[RoundRecord]) -> None: ...
