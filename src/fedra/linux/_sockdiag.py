"""The fallback backend of the traffic monitor: poll ``ss -tinHpeaO`` (sock_diag) and ``/proc/net/snmp``.

Used where bpftrace cannot run (no binary, not root, no tracefs or BTF). It builds the same cumulative
:class:`~fedra.linux._monitor_types.Snapshot` as the eBPF backend, so the same rules raise the same events.

What it sees, per poll: every TCP socket of one network namespace (the current one, or ``netns``) with
its owner (pid, comm; the owner's cgroup v2 id from ``/proc/PID/cgroup``), ``bytes_sent``/``bytes_retrans``/``bytes_received`` and total
retransmits. A socket is remembered by its cookie (``sk:``) after it closes, so its bytes stay counted.

What it cannot see, and why the eBPF backend is preferred:

- a connection that opens and closes between two polls (its bytes, its accept, its owner) — at most
  ``interval`` seconds of traffic on short-lived connections is lost;
- a sandboxed process's attempt that never makes a socket: socket() denied by seccomp, or connect()
  failing at once (no route in an empty namespace); a socket of a watched cgroup is seen only if it
  exists at a poll (an open connection or a SYN_SENT that is still retrying);
- which peer a reset came from: resets are counted per federation port by an nftables table of counters
  (``fedra_monitor_*``, in the watched namespace, removed at stop; needs root and nft), or, without
  those, as ``OutRsts + EstabResets + AttemptFails`` from ``/proc/net/snmp`` for the whole namespace
  (any port, so other traffic's resets count too);
- other namespaces: one backend watches one namespace (eBPF sees all of them).

Like eBPF, which counts from the moment it attaches, a connection already open at the first poll is
counted from then on (its counters at that poll are subtracted): a monitor started against a running
federation sees that round's traffic, not all the connection ever carried.

Bytes sent are ``bytes_sent - bytes_retrans`` (what the application handed over and TCP put on the
wire once), which equals the eBPF count once the send queue has drained.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedra.errors import ConfigError
from fedra.linux._bpf import cgroup2_mount
from fedra.linux._monitor_types import MonitorRules, SandboxKey, Snapshot, SocketKey

__all__ = ["SsBackend", "parse_ss", "ss_unavailable_reason"]

log = logging.getLogger("fedra.monitor")

_USERS = re.compile(r'users:\(\("((?:[^"\\]|\\.)*)",pid=(\d+),fd=\d+\)')
_FIELD = re.compile(r"\b(bytes_sent|bytes_retrans|bytes_received|ino):(\d+)")
_COOKIE = re.compile(r"\bsk:([0-9a-f]+)")
_RETRANS = re.compile(r"\bretrans:\d+/(\d+)")


def ss_unavailable_reason() -> str | None:
    """Why the ss backend cannot run here, or ``None`` if it can."""
    if shutil.which("ss") is None:
        return "ss is not installed (apt-get install iproute2)"
    return None


def _endpoint(text: str) -> tuple[str, int]:
    """``1.2.3.4:80`` / ``[::ffff:1.2.3.4]:80`` / ``[::1]:80`` -> (address, port); native IPv6 -> ``::``."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    elif ":" in host or host == "*":
        host = "::"
    return host, int(port) if port.isdigit() else 0


class _Sock:
    """One socket line of ``ss``, parsed."""

    __slots__ = ("comm", "cookie", "ino", "laddr", "lport", "pid", "raddr", "retrans", "rport", "rx",
                 "state", "tx")

    def __init__(self, line: str) -> None:
        cols = line.split()
        self.state = cols[0]
        self.laddr, self.lport = _endpoint(cols[3])
        self.raddr, self.rport = _endpoint(cols[4])
        users = _USERS.search(line)
        self.comm, self.pid = (users.group(1), int(users.group(2))) if users else ("", 0)
        fields = {k: int(v) for k, v in _FIELD.findall(line)}
        self.tx = fields.get("bytes_sent", 0) - fields.get("bytes_retrans", 0)
        self.rx = fields.get("bytes_received", 0)
        self.ino = fields.get("ino", 0)
        m = _COOKIE.search(line)
        self.cookie = int(m.group(1), 16) if m else 0
        m = _RETRANS.search(line)
        self.retrans = int(m.group(1)) if m else 0


def parse_ss(text: str) -> list[_Sock]:
    """The socket lines of ``ss -tinHpeaO`` output (one socket per line), skipping what does not parse."""
    out = []
    for line in text.splitlines():
        if len(line.split()) < 5:
            continue
        try:
            out.append(_Sock(line))
        except ValueError:
            log.debug("ss printed a line fedra cannot read: %r", line)
    return out


class SsBackend:
    """Polls ``ss`` every ``interval`` seconds and hands cumulative snapshots to ``on_snapshot``.

    Parameters
    ----------
    rules:
        What to watch (ports, cgroups).
    interval:
        Seconds between polls.
    on_snapshot:
        Called from the polling thread with each :class:`Snapshot`.
    netns:
        A named network namespace (``ip netns``) to watch instead of the current one.
    """

    name = "ss"

    def __init__(self, rules: MonitorRules, interval: float, on_snapshot: Callable[[Snapshot], None], *,
                 netns: str | None = None) -> None:
        self.rules = rules
        self.interval = interval
        self.on_snapshot = on_snapshot
        self.netns = netns
        self._ports = frozenset(rules.ports)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by flush() or stop(): poll now rather than at the interval
        self._thread: threading.Thread | None = None
        # last seen per socket (by cookie and 4-tuple), kept after it closes
        self._socks: dict[tuple[int, str, int, str, int], tuple[SocketKey, int, int, int]] = {}
        # counters of the sockets open at the first poll, as they were then: like eBPF, which counts from
        # the moment it attaches, the monitor counts what a connection carries after it started
        self._base: dict[tuple[int, str, int, str, int], tuple[int, int, int]] = {}
        self._polls = 0
        self._inbound: dict[tuple[str, int, int], set[int]] = {}
        self._sandbox: dict[SandboxKey, set[int]] = {}
        self._rst_base: int | None = None
        self._nft_table: str | None = None
        self._cg_ids: dict[str, int] = {}
        self._cg_root = cgroup2_mount()

    def _cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args] if self.netns else list(args)

    def start(self, timeout: float = 10.0) -> None:
        """Take a first poll (which must work) and start polling.

        Raises
        ------
        ConfigError
            ``ss`` is missing or fails (e.g. an unknown ``netns``).
        """
        why = ss_unavailable_reason()
        if why is not None:
            raise ConfigError(f"expected the ss fallback to run, but {why}")
        self._install_nft(timeout)
        try:
            self.on_snapshot(self.poll(timeout=timeout))
        except BaseException:
            self._remove_nft()
            raise
        self._thread = threading.Thread(target=self._loop, name="fedra-ss", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.on_snapshot(self.poll())
            except Exception:  # a failed poll must not end monitoring
                log.exception("the ss fallback failed to poll; trying again in %.1f s", self.interval)

    def stop(self) -> None:
        """Stop polling, after one last poll."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
            try:
                self.on_snapshot(self.poll())
            except Exception:
                log.exception("the ss fallback failed on its last poll")
        self._remove_nft()

    def flush(self) -> None:
        """Poll now (from the polling thread) rather than at the end of the interval."""
        self._wake.set()

    def _nft(self, script: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._cmd("nft", "-f", "-"), input=script, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def _install_nft(self, timeout: float) -> None:
        """Count resets per federation port with an nftables table of counters, where root and nft allow;
        else resets are counted per namespace from /proc/net/snmp (any port: noisier)."""
        if os.geteuid() != 0 or shutil.which("nft") is None:
            log.info("resets are counted for the whole namespace (/proc/net/snmp): nftables needs root and nft")
            return
        rules = "".join(f'    tcp {d}port {p} tcp flags & rst == rst counter comment "{p}"\n'
                        for p in sorted(self._ports) for d in ("s", "d"))
        table = f"fedra_monitor_{os.getpid()}_{id(self) % 100000}"
        chains = "".join(f"  chain {hook} {{\n    type filter hook {hook} priority -400; policy accept;\n"
                         f"{rules}  }}\n" for hook in ("output", "input"))
        script = f"table inet {table} {{\n{chains}}}\n"
        res = self._nft(script, timeout)
        if res.returncode != 0:
            log.info("resets are counted for the whole namespace: nft refused a counter table: %s",
                     res.stderr.strip())
            return
        self._nft_table = table

    def _remove_nft(self) -> None:
        if self._nft_table is not None:
            self._nft(f"delete table inet {self._nft_table}")
            self._nft_table = None

    def _nft_resets(self, timeout: float) -> dict[tuple[str, int], int]:
        """Reset packets per federation port, sent or received, from the counter table."""
        res = subprocess.run(self._cmd("nft", "-j", "list", "table", "inet", str(self._nft_table)),
                             capture_output=True, text=True, timeout=timeout, check=True)
        out: dict[tuple[str, int], int] = {}
        for item in json.loads(res.stdout).get("nftables", []):
            rule = item.get("rule")
            if not rule or not str(rule.get("comment", "")).isdigit():
                continue
            packets = sum(e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e)
            if packets:
                key = ("", int(rule["comment"]))
                out[key] = out.get(key, 0) + packets
        return out

    def _cgroup(self, pid: int) -> int:
        """The cgroup v2 id of ``pid`` (from ``/proc/PID/cgroup``; ss cannot resolve it under ``ip netns
        exec``, which remounts /sys), 0 if unknown."""
        if pid == 0 or self._cg_root is None:
            return 0
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return self._cg_ids.get(str(pid), 0)  # it exited: keep what was seen
        path = next((ln[3:] for ln in lines if ln.startswith("0::")), "")
        try:
            ident = os.stat(self._cg_root / path.lstrip("/")).st_ino if path else 0
        except OSError:
            ident = 0
        self._cg_ids[str(pid)] = ident
        return ident

    def _resets(self, timeout: float) -> int:
        """``OutRsts + EstabResets + AttemptFails`` of the namespace."""
        if self.netns:
            text = subprocess.run(self._cmd("cat", "/proc/net/snmp"), capture_output=True, text=True,
                                  timeout=timeout, check=True).stdout
        else:
            text = Path("/proc/net/snmp").read_text()
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
        values = dict(zip(rows[0], rows[1], strict=True))
        return sum(int(values[k]) for k in ("OutRsts", "EstabResets", "AttemptFails"))

    def poll(self, timeout: float = 10.0) -> Snapshot:
        """Run ``ss`` once and return the cumulative snapshot."""
        # ss -N enters the namespace itself: one process less than `ip netns exec`
        res = subprocess.run(["ss", *(("-N", self.netns) if self.netns else ()), "-tinHpeaO"],
                             capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode != 0:
            raise ConfigError(f"expected `ss -tinHpeaO` to succeed{' in netns ' + self.netns if self.netns else ''}, "
                              f"got exit status {res.returncode}: {res.stderr.strip()}")
        now = time.time()
        watch = self.rules.watch_cgroups
        retrans: dict[tuple[str, int, str, int], int] = {}
        for s in parse_ss(res.stdout):
            if s.state in ("LISTEN", "UNCONN"):
                continue
            cg = self._cgroup(s.pid)
            ours = s.lport in self._ports or s.rport in self._ports
            if cg in watch:
                self._sandbox.setdefault(SandboxKey(s.pid, s.comm, cg, s.state.lower(), 0),
                                         set()).add(s.cookie)
            if not ours and cg not in watch:
                continue
            if s.state == "TIME-WAIT" or (s.pid == 0 and s.tx == 0 and s.rx == 0):
                continue  # a socket with no owner and no counters left: what it carried was seen before
            # the socket cookie (ss's sk:) is stable for a socket's life, through accept() and close();
            # its inode is not (0 before accept and after close)
            ident = (s.cookie, s.laddr, s.lport, s.raddr, s.rport)
            key = SocketKey(s.pid, s.comm, cg, s.laddr, s.lport, s.raddr, s.rport)
            old = self._socks.get(ident)
            if self._polls == 0:
                self._base.setdefault(ident, (s.tx, s.rx, s.retrans))
            if old is not None and s.pid == 0:
                key = old[0]  # ss lost the owner (closing): keep the last one seen
            self._socks[ident] = (key, max(s.tx, old[1] if old else 0), max(s.rx, old[2] if old else 0),
                                  max(s.retrans, old[3] if old else 0))
            if s.lport in self._ports and s.rport not in self._ports:
                self._inbound.setdefault((s.raddr, s.rport, s.lport), set()).add(ident[0])
        self._polls += 1
        snap = Snapshot(time=now)
        for ident, (key, tx, rx, rt) in self._socks.items():
            b_tx, b_rx, b_rt = self._base.get(ident, (0, 0, 0))
            tx, rx, rt = max(0, tx - b_tx), max(0, rx - b_rx), max(0, rt - b_rt)
            snap.tx[key] = snap.tx.get(key, 0) + tx
            snap.rx[key] = snap.rx.get(key, 0) + rx
            four = (key.laddr, key.lport, key.raddr, key.rport)
            retrans[four] = retrans.get(four, 0) + rt
        snap.retransmits = {k: v for k, v in retrans.items() if v}
        snap.inbound = {k: len(v) for k, v in self._inbound.items()}
        snap.sandbox = {k: len(v) for k, v in self._sandbox.items()}
        if self._nft_table is not None:
            snap.resets = self._nft_resets(timeout)
        else:
            total = self._resets(timeout)
            if self._rst_base is None:
                self._rst_base = total
            if total > self._rst_base:
                snap.resets[("", 0)] = total - self._rst_base
        return snap
