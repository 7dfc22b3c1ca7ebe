"""The federation traffic monitor: counters per connection and per cgroup, and anomaly events.

A :class:`Monitor` runs one backend — bpftrace on tracepoints (:mod:`fedra.linux._bpf`), or, where eBPF is
not available, polling ``ss`` (:mod:`fedra.linux._sockdiag`) — which hands it a snapshot of cumulative
counters every ``interval``. The monitor keeps the latest counters and evaluates its rules on each
snapshot against the previous one:

============================  ==========================================================================
``sandbox_connect``           a process in a watched cgroup made an IPv4/IPv6 socket, or called connect()
``exfiltration``              upload on one federation connection within one round above
                              ``k * expected_update_bytes + overhead_bytes``
``retransmit_storm``          at least ``retransmit_threshold`` retransmits on one connection in one interval
``reset_storm``               at least ``reset_threshold`` resets on federation ports in one interval
``unadmitted_peer``           a connection to a federation port from an address not in ``admitted``
============================  ==========================================================================

Each event is a :class:`~fedra.linux._monitor_types.TrafficEvent`, handed to the callbacks, logged at
WARNING on ``fedra.monitor`` and, with ``jsonl``, written as one JSON line (``"type": "event"``) next to
periodic ``"type": "counters"`` lines. A monitor is also a run observer (``on_run_start``,
``on_round_end``): the server passes it to the round driver, so rounds bound the exfiltration window and the
model's size becomes the expected update size. At each round's end (:meth:`Monitor.new_round`) it writes
one ``"type": "round"`` line: that round's upload and download bytes, in all and per connection, and its
events by kind, keyed by ``round`` like the lines of ``metrics.jsonl``, and logs it at INFO. It asks the
backend for a snapshot first (a dump on demand, or an ``ss`` poll) and waits for it, at most
``2 * interval``; if none comes, the latest one counts, and up to one interval of a round's traffic lands
in the next round's line.

Upload on a connection is what flows towards the federation port: bytes received by the server's socket,
or sent by the client's. Where both ends are on this host (loopback, or namespaces of one kernel), the
larger of the two counts, so a connection is not counted twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from fedra.errors import ConfigError
from fedra.linux._bpf import BpfBackend, bpf_unavailable_reason
from fedra.linux._monitor_types import ConnKey, MonitorRules, Snapshot, SocketKey, TrafficEvent
from fedra.linux._sockdiag import SsBackend

__all__ = ["Monitor"]

log = logging.getLogger("fedra.monitor")

Backend = Literal["auto", "bpftrace", "ss"]


class _Runner(Protocol):
    name: str

    def start(self, timeout: float = ...) -> None: ...

    def stop(self) -> None: ...

    def flush(self) -> None: ...


class Monitor:
    """Accounts federation traffic and raises anomaly events.

    Parameters
    ----------
    rules:
        Ports, thresholds, admitted peers and watched cgroups (:class:`MonitorRules`).
    backend:
        ``"auto"`` (bpftrace if :func:`~fedra.linux._bpf.bpf_unavailable_reason` finds nothing missing and
        it attaches, else ``ss``, saying why), ``"bpftrace"`` or ``"ss"``.
    interval:
        Seconds between snapshots (bpftrace map dumps or ``ss`` polls); storm thresholds are per interval.
    on_event:
        Callbacks given each event, from the backend's thread. They should return quickly.
    jsonl:
        A file to append events and counters to (JSON lines).
    counters_every:
        Seconds between ``counters`` lines in ``jsonl`` (also written once at stop).
    netns:
        For the ``ss`` backend: the named network namespace to watch (eBPF sees every namespace).

    Examples
    --------
    >>> rules = MonitorRules(ports=(7788,), expected_update_bytes=4_000_000, k=3)  # doctest: +SKIP
    >>> with Monitor(rules) as mon:  # doctest: +SKIP
    ...     run_the_round()
    >>> mon.events  # doctest: +SKIP
    """

    def __init__(self, rules: MonitorRules, *, backend: Backend = "auto", interval: float = 1.0,
                 on_event: Iterable[Callable[[TrafficEvent], None]] = (),
                 jsonl: str | os.PathLike[str] | None = None, counters_every: float = 10.0,
                 netns: str | None = None) -> None:
        if backend not in ("auto", "bpftrace", "ss"):
            raise ConfigError(f"expected backend 'auto', 'bpftrace' or 'ss', got {backend!r}")
        if not interval > 0:
            raise ConfigError(f"expected a positive interval in seconds, got {interval}")
        self.rules = rules
        self.requested = backend
        self.interval = interval
        self.netns = netns
        self.callbacks = list(on_event)
        self.jsonl = None if jsonl is None else Path(jsonl)
        self.counters_every = counters_every
        #: why eBPF is not used, when the monitor fell back to ss (``None`` otherwise)
        self.fallback_reason: str | None = None
        self.events: list[TrafficEvent] = []
        self._lock = threading.RLock()
        self._runner: _Runner | None = None
        self._name = ""
        self._file: IO[str] | None = None
        self._last = Snapshot(time=0.0)
        self._window_base: dict[ConnKey, int] = {}
        self._flagged: set[ConnKey] = set()
        self._round = 0
        self._counters_at = 0.0
        self._seen_inbound: set[tuple[str, int, int]] = set()
        self._pending: list[dict[str, Any]] | None = []
        # where the round now open started: upload and download per connection, and the events so far
        self._round_up: dict[ConnKey, int] = {}
        self._round_down: dict[ConnKey, int] = {}
        self._round_events = 0
        self._snapshots = 0
        self._stopping = False
        self._arrived = threading.Condition(threading.Lock())

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend in use: ``"bpftrace"`` or ``"ss"`` (``""`` before :meth:`start`)."""
        return self._name

    def start(self) -> Monitor:
        """Start the backend (falling back from bpftrace to ss under ``"auto"``), and return ``self``.

        Raises
        ------
        ConfigError
            The requested backend cannot run here; the message says why and what to use instead.
        """
        if self._runner is not None:
            raise ConfigError("expected a monitor that is not running; this one was started already")
        self._counters_at = time.time()  # the first periodic counters line comes counters_every from now
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.jsonl, "a", encoding="utf-8")  # noqa: SIM115 - lives until stop()
        try:
            self._runner = self._start_backend()
        except BaseException:
            if self._file is not None:
                self._file.close()
                self._file = None
            raise
        with self._lock:
            rows, self._pending = self._pending, None
            self._write({"type": "monitor", "time": time.time(), "backend": self.backend,
                         "fallback_reason": self.fallback_reason, "ports": list(self.rules.ports)})
            for row in rows or ():
                self._write(row)
        log.info("traffic monitor running with %s on ports %s", self.backend, list(self.rules.ports))
        return self

    def _start_backend(self) -> _Runner:
        """bpftrace if asked for or possible, else ss (saying why)."""
        if self.requested in ("auto", "bpftrace"):
            why = bpf_unavailable_reason()
            if why is None:
                runner = BpfBackend(self.rules, self.interval, self._on_snapshot)
                self._name = runner.name
                try:
                    runner.start()
                except ConfigError as exc:
                    why = str(exc)
                else:
                    return runner
            if self.requested == "bpftrace":
                raise ConfigError(f"expected to run the eBPF traffic monitor, but {why}")
            self.fallback_reason = why
            log.warning("eBPF traffic accounting is not available (%s); falling back to polling ss, "
                        "which misses short-lived connections and refused attempts", why)
        ss = SsBackend(self.rules, self.interval, self._on_snapshot, netns=self.netns)
        self._name = ss.name  # its first poll, inside start(), may already raise events
        ss.start()
        return ss

    def stop(self, *, last_round: int | None = None) -> None:
        """Stop the backend (taking a last snapshot), write the final counters and close ``jsonl``.

        ``last_round``: the number of the round still open, whose ``round`` line is then written (a
        client, which sees no round end, passes the last round it served).
        """
        self._stopping = True  # the backend's last snapshot, taken as it stops, is the freshest there is
        if self._runner is not None:
            self._runner.stop()
        if last_round is not None:
            self.new_round(last_round)
        with self._lock:
            self._write({"type": "counters", "time": time.time(), **self.counters()})
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- run observer --------------------------------------------------------------------------------

    def on_run_start(self, info: Any) -> None:
        """Take the model's size as the expected update size, unless the rules already give one."""
        size = getattr(info, "model_bytes", None)
        if self.rules.expected_update_bytes is None and isinstance(size, int) and size > 0:
            with self._lock:
                self.rules = replace(self.rules, expected_update_bytes=size)

    def on_round_end(self, record: Any) -> None:
        """A round ended: start a new exfiltration window."""
        self.new_round(int(getattr(record, "round", self._round + 1)))

    def on_run_end(self, records: Any) -> None:
        """Nothing to do: :meth:`stop` writes the final counters."""

    def new_round(self, number: int | None = None) -> None:
        """Start a new exfiltration window at the latest snapshot's counters (``number``: the round that
        ended), and write the counters so far to ``jsonl``."""
        if self._runner is not None and not self._stopping:
            self.flush()
        with self._lock:
            self._round = self._round + 1 if number is None else number
            self._window_base = self._uploads(self._last)
            self._flagged = set()
            row = self._round_row()
            self._write(row)
            self._write({"type": "counters", "time": time.time(), **self.counters()})
        log.info("traffic in round %d: %d bytes up, %d bytes down on %d connection(s); events %s",
                 row["round"], row["upload"], row["download"], len(row["connections"]), row["events"] or "none")

    def _round_row(self) -> dict[str, Any]:
        """The ``round`` line of the round that just ended (``self._round``), and start the next one."""
        up, down = self._window_base, _downloads(self._last, self._conn)
        conns = []
        for c in sorted(up.keys() | down.keys(), key=str):
            u, d = up.get(c, 0) - self._round_up.get(c, 0), down.get(c, 0) - self._round_down.get(c, 0)
            if u or d:
                conns.append({"client": c.client, "server_port": c.server_port, "upload": u, "download": d})
        kinds: dict[str, int] = {}
        for ev in self.events[self._round_events:]:
            kinds[ev.kind] = kinds.get(ev.kind, 0) + 1
        self._round_up, self._round_down, self._round_events = dict(up), down, len(self.events)
        return {"type": "round", "time": time.time(), "round": self._round, "backend": self.backend,
                "upload": sum(c["upload"] for c in conns), "download": sum(c["download"] for c in conns),
                "connections": conns, "events": kinds}

    # -- counters ------------------------------------------------------------------------------------

    def _conn(self, key: SocketKey) -> tuple[ConnKey, bool] | None:
        """The federation connection of a socket and whether this is the server's end, or ``None``."""
        ports = self.rules.ports
        if key.lport in ports and key.rport not in ports:
            return ConnKey(f"{key.raddr}:{key.rport}", key.lport), True
        if key.rport in ports:
            return ConnKey(f"{key.laddr}:{key.lport}", key.rport), False
        return None

    def _uploads(self, snap: Snapshot) -> dict[ConnKey, int]:
        """Upload per connection: max(server end's received bytes, client end's sent bytes)."""
        server: dict[ConnKey, int] = {}
        client: dict[ConnKey, int] = {}
        for key, n in snap.rx.items():
            c = self._conn(key)
            if c is not None and c[1]:
                server[c[0]] = server.get(c[0], 0) + n
        for key, n in snap.tx.items():
            c = self._conn(key)
            if c is not None and not c[1]:
                client[c[0]] = client.get(c[0], 0) + n
        return {k: max(server.get(k, 0), client.get(k, 0)) for k in server.keys() | client.keys()}

    def counters(self) -> dict[str, Any]:
        """The latest counters, JSON-ready.

        Returns
        -------
        dict
            ``backend``; ``sockets``: one entry per socket (pid, comm, cgroup, local and peer endpoint,
            ``tx``/``rx`` bytes); ``connections``: per federation connection, ``upload`` and ``download``
            bytes; ``cgroups``: ``tx``/``rx`` bytes per cgroup id (as a string); ``retransmits`` and
            ``resets`` totals.
        """
        with self._lock:
            snap = self._last
            sockets = []
            cgroups: dict[str, dict[str, int]] = {}
            for key in sorted(snap.tx.keys() | snap.rx.keys(), key=lambda k: (k.lport, k.raddr, k.rport, k.pid)):
                tx, rx = snap.tx.get(key, 0), snap.rx.get(key, 0)
                sockets.append({"pid": key.pid, "comm": key.comm, "cgroup": key.cgroup,
                                "local": f"{key.laddr}:{key.lport}", "peer": f"{key.raddr}:{key.rport}",
                                "tx": tx, "rx": rx})
                cg = cgroups.setdefault(str(key.cgroup), {"tx": 0, "rx": 0})
                cg["tx"] += tx
                cg["rx"] += rx
            up = self._uploads(snap)
            down = _downloads(snap, self._conn)
            conns = [{"client": c.client, "server_port": c.server_port, "upload": up.get(c, 0),
                      "download": down.get(c, 0)} for c in sorted(up.keys() | down.keys(), key=str)]
            return {"backend": self.backend, "round": self._round, "sockets": sockets, "connections": conns,
                    "cgroups": cgroups, "retransmits": sum(snap.retransmits.values()),
                    "resets": sum(snap.resets.values())}

    def connection(self, client: str, server_port: int) -> dict[str, int]:
        """``{"upload": n, "download": n}`` bytes of one federation connection (zeros if unseen)."""
        with self._lock:
            c = ConnKey(client, server_port)
            return {"upload": self._uploads(self._last).get(c, 0),
                    "download": _downloads(self._last, self._conn).get(c, 0)}

    # -- rules ---------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Have the backend take a snapshot now and wait for it (at most ``timeout``, default
        ``2 * interval``); ``False`` if none arrived in time (or the monitor is not running)."""
        runner = self._runner
        if runner is None:
            return False
        deadline = time.monotonic() + (2 * self.interval if timeout is None else timeout)
        with self._arrived:
            seen = self._snapshots
        pause = 0.05
        while True:
            # asked again after a pause: bpftrace reports its probes attached a moment before they all are
            runner.flush()
            left = deadline - time.monotonic()
            with self._arrived:
                if self._arrived.wait_for(lambda: self._snapshots > seen, max(0.0, min(pause, left))):
                    return True
            if left <= pause:
                return False
            pause *= 2

    def _on_snapshot(self, snap: Snapshot) -> None:
        with self._lock:
            prev, self._last = self._last, snap
            events = self._evaluate(prev, snap)
            for ev in events:
                self.events.append(ev)
                self._write(ev.to_json())
            if self._file is not None and snap.time - self._counters_at >= self.counters_every:
                self._counters_at = snap.time
                self._write({"type": "counters", "time": snap.time, **self.counters()})
        with self._arrived:  # after the snapshot is in: a flush() waiting for it reads it next
            self._snapshots += 1
            self._arrived.notify_all()
        for ev in events:
            log.warning("traffic anomaly %s: %s (pid %d %s, peer %s, %d bytes, %d times) [%s]", ev.kind,
                        ev.detail, ev.pid, ev.comm, ev.peer or "-", ev.bytes, ev.count, ev.backend)
            for cb in self.callbacks:
                try:
                    cb(ev)
                except Exception:
                    log.exception("a traffic event callback failed; continuing")

    def _event(self, snap: Snapshot, kind: Any, detail: str, *, pid: int = 0, comm: str = "", peer: str = "",
               nbytes: int = 0, count: int = 1, cgroup: int = 0) -> TrafficEvent:
        return TrafficEvent(kind=kind, time=snap.time, pid=pid, comm=comm, peer=peer, bytes=nbytes,
                            count=count, detail=detail, backend=self.backend, cgroup=cgroup)

    def _evaluate(self, prev: Snapshot, snap: Snapshot) -> list[TrafficEvent]:
        rules = self.rules
        events: list[TrafficEvent] = []
        for key, n in sorted(snap.sandbox.items(), key=lambda kv: (kv[0].pid, kv[0].what)):
            new = n - prev.sandbox.get(key, 0)
            if new > 0:
                how = "succeeded" if key.result >= 0 or key.result == -115 else f"failed with {key.result}"
                events.append(self._event(
                    snap, "sandbox_connect", f"expected no network use from watched cgroup {key.cgroup}, "
                    f"found {new} {key.what} attempt(s) that {how}", pid=key.pid, comm=key.comm,
                    count=new, cgroup=key.cgroup))
        if rules.expected_update_bytes is not None:
            limit = rules.k * rules.expected_update_bytes + rules.overhead_bytes
            owners = _owners(snap, self._conn)
            for conn, total in sorted(self._uploads(snap).items(), key=lambda kv: str(kv[0])):
                sent = total - self._window_base.get(conn, 0)
                if sent > limit and conn not in self._flagged:
                    self._flagged.add(conn)
                    pid, comm, cg = owners.get(conn, (0, "", 0))
                    events.append(self._event(
                        snap, "exfiltration", f"expected at most {rules.k:g} x {rules.expected_update_bytes} "
                        f"+ {rules.overhead_bytes} bytes uploaded in round {self._round + 1}, found {sent} "
                        f"on {conn}", pid=pid,
                        comm=comm, peer=conn.client, nbytes=sent, cgroup=cg))
        by_four = {(k.laddr, k.lport, k.raddr, k.rport): k for k in sorted(
            snap.tx.keys() | snap.rx.keys(), key=lambda k: (k.pid, k.comm))}
        for four, n in sorted(snap.retransmits.items()):
            new = n - prev.retransmits.get(four, 0)
            if new >= rules.retransmit_threshold:
                laddr, lport, raddr, rport = four
                owner = by_four.get(four)
                events.append(self._event(
                    snap, "retransmit_storm", f"expected fewer than {rules.retransmit_threshold} "
                    f"retransmits per {self.interval:g} s, found {new} on {laddr}:{lport} -> {raddr}:{rport}",
                    peer=f"{raddr}:{rport}", count=new, pid=owner.pid if owner else 0,
                    comm=owner.comm if owner else "", cgroup=owner.cgroup if owner else 0))
        rst = {k: n - prev.resets.get(k, 0) for k, n in snap.resets.items() if n > prev.resets.get(k, 0)}
        if sum(rst.values()) >= rules.reset_threshold:
            top = max(rst.items(), key=lambda kv: kv[1])[0]
            where = ", ".join(f"{a or 'namespace'}:{p}={n}" for (a, p), n in sorted(rst.items()))
            events.append(self._event(
                snap, "reset_storm", f"expected fewer than {rules.reset_threshold} resets per "
                f"{self.interval:g} s, found {sum(rst.values())} ({where})",
                peer=f"{top[0]}:{top[1]}" if top[0] else "", count=sum(rst.values())))
        if rules.admitted is not None:
            for (addr, port, lport), n in sorted(snap.inbound.items()):
                if addr in rules.admitted or (addr, port, lport) in self._seen_inbound:
                    continue
                self._seen_inbound.add((addr, port, lport))
                events.append(self._event(
                    snap, "unadmitted_peer", f"expected connections to port {lport} only from "
                    f"{sorted(rules.admitted)}, found one from {addr}:{port}", peer=f"{addr}:{port}",
                    count=n))
        return events

    def _write(self, row: dict[str, Any]) -> None:
        if self._pending is not None:  # the backend is starting: the header line goes first
            self._pending.append(row)
        elif self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()


def _downloads(snap: Snapshot, conn: Callable[[SocketKey], tuple[ConnKey, bool] | None]) -> dict[ConnKey, int]:
    """Download per connection: max(server end's sent bytes, client end's received bytes)."""
    out: dict[ConnKey, int] = {}
    for side, is_server in ((snap.tx, True), (snap.rx, False)):
        part: dict[ConnKey, int] = {}
        for key, n in side.items():
            c = conn(key)
            if c is not None and c[1] == is_server:
                part[c[0]] = part.get(c[0], 0) + n
        for k, v in part.items():
            out[k] = max(out.get(k, 0), v)
    return out


def _owners(snap: Snapshot,
            conn: Callable[[SocketKey], tuple[ConnKey, bool] | None]) -> dict[ConnKey, tuple[int, str, int]]:
    """The process on the client end of each connection (else the server end): (pid, comm, cgroup)."""
    out: dict[ConnKey, tuple[int, str, int]] = {}
    for key in sorted(snap.tx.keys() | snap.rx.keys(), key=lambda k: (k.pid, k.comm)):
        c = conn(key)
        if c is not None and (c[0] not in out or not c[1]):
            out[c[0]] = (key.pid, key.comm, key.cgroup)
    return out
