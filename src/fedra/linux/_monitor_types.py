"""The values the traffic monitor passes around: its rules, its snapshots and the events it raises.

Both backends (:mod:`fedra.linux._bpf`, bpftrace on tracepoints, and :mod:`fedra.linux._sockdiag`, polling
``ss``) turn what they see into the same :class:`Snapshot` of *cumulative* counters; the rules in
:mod:`fedra.linux._monitor` read only snapshots, so both backends raise the same :class:`TrafficEvent`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "EVENT_KINDS",
    "ConnKey",
    "MonitorRules",
    "SandboxKey",
    "Snapshot",
    "SocketKey",
    "TrafficEvent",
]

#: The anomaly kinds, in the order the issue lists them.
EVENT_KINDS = ("sandbox_connect", "exfiltration", "retransmit_storm", "reset_storm", "unadmitted_peer")

EventKind = Literal["sandbox_connect", "exfiltration", "retransmit_storm", "reset_storm", "unadmitted_peer"]


@dataclass(frozen=True, slots=True)
class SocketKey:
    """One socket as one process sees it: who (pid, comm, cgroup id) and which connection (the 4-tuple).

    ``cgroup`` is the cgroup v2 id (the inode number of the group's directory in the unified hierarchy),
    0 where unknown. Addresses are dotted IPv4 strings; an IPv6 peer that is not IPv4-mapped shows as
    ``"::"`` (see the module notes of :mod:`fedra.linux._bpf`).
    """

    pid: int
    comm: str
    cgroup: int
    laddr: str
    lport: int
    raddr: str
    rport: int


@dataclass(frozen=True, slots=True)
class ConnKey:
    """A federation connection, the same from both ends: the client's endpoint and the server's port."""

    client: str
    server_port: int

    def __str__(self) -> str:
        return f"{self.client}->:{self.server_port}"


@dataclass(frozen=True, slots=True)
class SandboxKey:
    """A network attempt by a process in a watched cgroup: ``what`` is ``socket``, ``connect`` or a TCP state."""

    pid: int
    comm: str
    cgroup: int
    what: str
    result: int


@dataclass(slots=True)
class Snapshot:
    """Cumulative counters since the backend started, as one backend saw them at ``time``.

    Attributes
    ----------
    tx, rx:
        Bytes sent and received per socket.
    inbound:
        Connections accepted on a federation port, by ``(peer address, peer port, local port)``: how many
        times each was established.
    retransmits:
        Retransmitted segments per socket 4-tuple ``(laddr, lport, raddr, rport)``.
    resets:
        TCP resets sent or received on a federation port (or, for ``ss``, in the whole namespace), by
        ``(peer address, local port)``.
    sandbox:
        Network attempts by processes in watched cgroups.
    """

    time: float = field(default_factory=time.time)
    tx: dict[SocketKey, int] = field(default_factory=dict)
    rx: dict[SocketKey, int] = field(default_factory=dict)
    inbound: dict[tuple[str, int, int], int] = field(default_factory=dict)
    retransmits: dict[tuple[str, int, str, int], int] = field(default_factory=dict)
    resets: dict[tuple[str, int], int] = field(default_factory=dict)
    sandbox: dict[SandboxKey, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrafficEvent:
    """An anomaly the monitor raised.

    Attributes
    ----------
    kind:
        One of :data:`EVENT_KINDS`.
    time:
        Unix time of the snapshot that showed it.
    pid, comm:
        The process involved, where known (0 and ``""`` otherwise, e.g. a connection accepted in softirq).
    peer:
        ``address:port`` of the other end, where known, else ``""``.
    bytes:
        The byte count the rule compared (upload volume for ``exfiltration``), else 0.
    count:
        How many occurrences the event stands for (retransmits, resets, attempts, connections).
    detail:
        One sentence for a person: what was expected and what was found.
    backend:
        ``"bpftrace"`` or ``"ss"``: which backend saw it.
    cgroup:
        The cgroup v2 id involved, 0 where unknown.
    """

    kind: EventKind
    time: float
    pid: int
    comm: str
    peer: str
    bytes: int
    count: int
    detail: str
    backend: str
    cgroup: int = 0

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict, with ``"type": "event"``."""
        return {"type": "event", "kind": self.kind, "time": self.time, "pid": self.pid, "comm": self.comm,
                "peer": self.peer, "bytes": self.bytes, "count": self.count, "detail": self.detail,
                "backend": self.backend, "cgroup": self.cgroup}


@dataclass(frozen=True, slots=True)
class MonitorRules:
    """What the monitor watches and when it raises an event.

    Parameters
    ----------
    ports:
        The federation's TCP ports (the server's listening port). A socket whose local or remote port is
        one of them is a federation socket.
    expected_update_bytes:
        The size of one model update; ``None`` turns the exfiltration rule off until it is known (the
        server sets it from the model's size when the run starts).
    k:
        Upload volume per connection in one round above ``k * expected_update_bytes + overhead_bytes`` is
        an exfiltration.
    overhead_bytes:
        Allowance per connection and round for the protocol's own bytes (HTTP/2 and TLS framing, the
        client's task requests), which dominate the upload of a small model.
    retransmit_threshold:
        Retransmitted segments on one connection within one interval that make a storm.
    reset_threshold:
        Resets on federation ports within one interval that make a storm.
    admitted:
        Peer addresses allowed to connect to a federation port; ``None`` turns the rule off.
    watch_cgroups:
        cgroup v2 ids (see :func:`fedra.linux._bpf.cgroup_id`) whose processes must not use the network.
    """

    ports: tuple[int, ...]
    expected_update_bytes: int | None = None
    k: float = 3.0
    overhead_bytes: int = 65536
    retransmit_threshold: int = 20
    reset_threshold: int = 10
    admitted: frozenset[str] | None = None
    watch_cgroups: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        from fedra.errors import ConfigError

        if not self.ports or any(not 0 < p < 65536 for p in self.ports):
            raise ConfigError(f"expected one or more TCP ports in 1..65535, got {list(self.ports)}; "
                              "pass the federation server's port")
        if self.k <= 0:
            raise ConfigError(f"expected k > 0 (upload limit = k x expected update size), got {self.k}")
        if self.expected_update_bytes is not None and self.expected_update_bytes <= 0:
            raise ConfigError(f"expected a positive expected update size, got {self.expected_update_bytes}")
        if self.overhead_bytes < 0:
            raise ConfigError(f"expected overhead_bytes >= 0, got {self.overhead_bytes}")
        if self.retransmit_threshold < 1 or self.reset_threshold < 1:
            raise ConfigError("expected storm thresholds >= 1, got retransmit "
                              f"{self.retransmit_threshold} and reset {self.reset_threshold}")
