"""The eBPF backend of the traffic monitor: a bpftrace program on tracepoints, and what it needs to run.

The program aggregates in the kernel (``sum()`` and ``count()`` into maps) and prints the maps every
``interval`` with ``-f json``; nothing is printed per packet or per call. Maps are cumulative (never cleared
while running), so a lost or late dump loses no bytes: the next one carries the totals.

Probes (only tracepoints, BTF struct access and one uprobe: this kernel has no kprobes):

- ``sock:sock_send_length`` / ``sock:sock_recv_length`` (TCP over IPv4/IPv6): bytes per socket of a
  federation port (local or remote) or of a watched cgroup. The filter reads the two ports from
  ``struct sock``; a federation socket is then counted under a 16-byte key, its ``struct sock`` address
  and the time this socket life was first seen (``@born``), with one ``sum()``. Who uses the socket (pid,
  comm and cgroup of the calling process) and its 4-tuple are read once per socket life, at its first
  call, into ``@sock``, which :func:`parse_maps` joins back, so snapshots keep the same per-socket
  :class:`SocketKey` as before (and as the ``ss`` fallback). A socket that was open before the monitor
  started is described at its first call after the start. Receives with ``MSG_PEEK`` are not counted.
- ``sock:inet_sock_set_state``: SYN_RECV -> ESTABLISHED on a federation port is an accepted connection; a
  change to SYN_SENT, SYN_RECV or CLOSE ends a socket life (the ``@born`` entry goes), so a ``struct sock``
  reused for another connection is counted under a new key. (A read after close starts a second life of
  the same socket; both add up to one :class:`SocketKey`.)
- ``tcp:tcp_retransmit_skb``, ``tcp:tcp_send_reset`` and ``tcp:tcp_receive_reset`` on federation ports.
- For watched cgroups only: ``syscalls:sys_enter/exit_socket`` and ``sys_enter/exit_connect``. A socket()
  denied by seccomp never reaches ``sys_enter_socket`` (seccomp runs first) but does reach
  ``sys_exit_socket`` with the error, so an exit without an enter is counted as a denied attempt.
- A uprobe on the monitor process's own libc ``getsid``, firing for ``getsid(FLUSH_PID)`` from that process
  (:data:`FLUSH_PID` is a pid no process can have): a dump on demand (:meth:`BpfBackend.flush`), so a
  round's counters are read when the round ends rather than up to one interval later. The call itself
  fails with ``ESRCH``. Where the libc cannot be found, the ``syscalls:sys_enter_getsid`` tracepoint does
  the same, at a price: while any syscall tracepoint is attached, every system call of every process
  takes the kernel's syscall-tracing path.

Limits: IPv4 and IPv4-mapped IPv6 peers are reported by address; a native IPv6 peer shows as ``::``.
cgroup matching is exact (a process in a child of a watched group is not matched): watch the leaf groups.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fedra.errors import ConfigError
from fedra.linux._monitor_types import MonitorRules, SandboxKey, Snapshot, SocketKey

__all__ = ["FLUSH_PID", "BpfBackend", "bpf_unavailable_reason", "bpftrace_program", "cgroup2_mount", "cgroup_id",
           "libc_path", "parse_maps"]

log = logging.getLogger("fedra.monitor")

TRACEFS = Path("/sys/kernel/tracing")
_TRACEPOINTS = ("sock/sock_send_length", "sock/sock_recv_length", "sock/inet_sock_set_state",
                "tcp/tcp_retransmit_skb", "tcp/tcp_send_reset", "tcp/tcp_receive_reset")
#: printed after each dump, so the reader knows a snapshot is complete
_MARK = "fedra-snapshot"
#: printed by the BEGIN probe, which bpftrace fires once every other probe is attached; its
#: ``attached_probes`` message comes earlier, while it is still attaching them
_ATTACHED = "fedra-attached"
_MAPS = ("@tx", "@rx", "@sock", "@inbound", "@retrans", "@rst", "@sandbox")
_SOCKET_WHAT = {0: "socket", 1: "connect"}
#: getsid() of this pid from the monitor's process asks the program for a dump; above any pid_max (2**22)
FLUSH_PID = (1 << 30) + 0xFED


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 (unified) hierarchy is mounted, from ``/proc/self/mountinfo``; ``None`` if not."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def cgroup_id(path: str | os.PathLike[str]) -> int:
    """The cgroup v2 id of a group: the inode number of its directory (what bpftrace's ``cgroup`` gives).

    Parameters
    ----------
    path:
        A directory of the cgroup2 mount (``/sys/fs/cgroup/unified/fedra/sbx1``), or a path relative to
        that mount (``/fedra/sbx1``, as in the ``0::`` line of ``/proc/PID/cgroup``).

    Returns
    -------
    int
        The id to put in :attr:`MonitorRules.watch_cgroups`.

    Raises
    ------
    ConfigError
        The group does not exist.
    """
    p = Path(path)
    if not p.is_dir():
        root = cgroup2_mount()
        if root is not None and (root / str(p).lstrip("/")).is_dir():
            p = root / str(p).lstrip("/")
        else:
            raise ConfigError(f"expected a cgroup v2 directory (under {root or 'the cgroup2 mount'}), "
                              f"got {path!s}, which does not exist; create the group first")
    return os.stat(p).st_ino


def bpf_unavailable_reason(*, mount: bool = True) -> str | None:
    """Why the bpftrace backend cannot run here, or ``None`` if it can.

    Checks the binary, root, tracefs (mounted here if absent and ``mount`` is set, as root), the
    tracepoints the program uses and kernel BTF. Whether the program attaches is only known when it
    starts: :meth:`BpfBackend.start` raises with bpftrace's own message if it does not.
    """
    if shutil.which("bpftrace") is None:
        return "bpftrace is not installed (apt-get install bpftrace)"
    if os.geteuid() != 0:
        return "bpftrace needs root (CAP_BPF and CAP_PERFMON); run as root or use the ss fallback"
    if not (TRACEFS / "events").is_dir() and mount:
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(TRACEFS)], capture_output=True, check=False)
    if not (TRACEFS / "events").is_dir():
        return f"tracefs is not mounted at {TRACEFS} (mount -t tracefs tracefs {TRACEFS})"
    missing = [tp for tp in _TRACEPOINTS if not (TRACEFS / "events" / tp).is_dir()]
    if missing:
        return f"the kernel lacks tracepoints {', '.join(missing)}"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "the kernel has no BTF (/sys/kernel/btf/vmlinux), which the program needs for struct sock"
    return None


def _any(names: list[str], ports: tuple[int, ...]) -> str:
    return " || ".join(f"{n} == {p}" for n in names for p in ports)


def libc_path(pid: int | str = "self") -> str | None:
    """The C library mapped into process ``pid`` (from ``/proc/PID/maps``), or ``None`` where none is found,
    the file is gone (replaced since the process started) or the kernel has no uprobes."""
    if not (TRACEFS / "uprobe_events").exists():
        return None
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        path = fields[5].strip() if len(fields) == 6 else ""
        name = Path(path).name
        if (name.startswith("libc.so") or name.startswith("libc-")) and Path(path).is_file():
            return path
    return None


def bpftrace_program(rules: MonitorRules, interval: float, *, flush_pid: int | None = None,
                     flush_libc: str | None = None) -> str:
    """The bpftrace program for ``rules``.

    Parameters
    ----------
    rules:
        Its ports and watched cgroups are compiled into the probes' filters.
    interval:
        Seconds between map dumps (rounded to milliseconds, at least 10 ms).
    flush_pid:
        The process whose ``getsid(FLUSH_PID)`` calls ask for a dump at once (``None``: no such probe).
    flush_libc:
        The C library of that process: the dump probe is then a uprobe on its ``getsid``, which costs
        nothing to any other call. Without it, the probe is the ``sys_enter_getsid`` tracepoint, which puts
        every system call of every process on the kernel's syscall-tracing path while it is attached.

    Returns
    -------
    str
        Program text for ``bpftrace -f json -e``. Each dump prints the maps ``@tx``, ``@rx`` (bytes per
        socket life), ``@sock`` (who and which connection, per socket life), ``@inbound``, ``@retrans``,
        ``@rst`` (counts) and, with watched cgroups, ``@sandbox``, then the line ``fedra-snapshot``; see
        :func:`parse_maps`.
    """
    ports = tuple(sorted(set(rules.ports)))
    cgroups = sorted(rules.watch_cgroups)
    in_cg = " || ".join(f"cgroup == {c}" for c in cgroups)
    sock_cond = _any(["$lp", "$rp"], ports) + (f" || {in_cg}" if in_cg else "")
    ms = max(10, round(interval * 1000))

    # Per call on a federation socket: two reads of struct sock (the ports: the filter), one lookup of
    # @born and one sum() into a 16-byte key (the struct sock's address and when this socket life was first
    # seen). The wide description (process, cgroup, 4-tuple) is read once per socket life, at its first send
    # or receive after the monitor started (so connections opened before it count as well), into @sock. A
    # socket life ends at a state change that starts or ends a connection (SYN_SENT, SYN_RECV, CLOSE): its
    # @born entry goes, so a struct sock reused for another connection is counted under a new key. Calls on
    # other sockets cost the two reads and the comparison, as before.
    def account(probe: str, amap: str, extra: str) -> str:
        return f"""tracepoint:sock:{probe} /args->ret > 0 && args->protocol == 6 && (args->family == 2 || args->family == 10){extra}/ {{
  $sk = (struct sock *)args->sk;
  $raw = (uint64)$sk->__sk_common.skc_dport;
  $rp = (($raw >> 8) | ($raw << 8)) & 0xffff;
  $lp = (uint64)$sk->__sk_common.skc_num;
  if ({sock_cond}) {{
    $b = @born[args->sk];
    if ($b == 0) {{
      $b = nsecs;
      @born[args->sk] = $b;
      @sock[args->sk, $b] = (pid, comm, cgroup, $sk->__sk_common.skc_rcv_saddr, $lp, $sk->__sk_common.skc_daddr, $rp);
    }}
    {amap}[args->sk, $b] = sum(args->ret);
  }}
}}
"""

    addr = "args->daddr[0], args->daddr[1], args->daddr[2], args->daddr[3]"
    src = "args->saddr[0], args->saddr[1], args->saddr[2], args->saddr[3]"
    text = account("sock_send_length", "@tx", "")
    text += account("sock_recv_length", "@rx", " && !(args->flags & 2)")
    text += f"""tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {{
  if (args->newstate == 2 || args->newstate == 3 || args->newstate == 7) {{
    delete(@born[args->skaddr]);
  }}
  if (args->oldstate == 3 && args->newstate == 1 && ({_any(["args->sport"], ports)})) {{
    @inbound[{addr}, args->dport, args->sport] = count();
  }}
}}
tracepoint:tcp:tcp_retransmit_skb /{_any(["args->sport", "args->dport"], ports)}/ {{
  @retrans[{src}, args->sport, {addr}, args->dport] = count();
}}
tracepoint:tcp:tcp_receive_reset /{_any(["args->sport", "args->dport"], ports)}/ {{
  @rst[{addr}, args->sport] = count();
}}
tracepoint:tcp:tcp_send_reset {{
  $sp = ((uint64)args->saddr[2] << 8) | args->saddr[3];
  $dp = ((uint64)args->daddr[2] << 8) | args->daddr[3];
  if ({_any(["$sp", "$dp"], ports)}) {{
    @rst[args->daddr[4], args->daddr[5], args->daddr[6], args->daddr[7], $sp] = count();
  }}
}}
"""
    if in_cg:
        text += f"""tracepoint:syscalls:sys_enter_socket /{in_cg}/ {{ @fam[tid] = args->family + 1; }}
tracepoint:syscalls:sys_exit_socket /{in_cg}/ {{
  $f = @fam[tid]; delete(@fam[tid]);
  if ($f == 3 || $f == 11 || ($f == 0 && args->ret < 0)) {{ @sandbox[pid, comm, cgroup, 0, args->ret] = count(); }}
}}
tracepoint:syscalls:sys_enter_connect /{in_cg}/ {{
  $sa = (struct sockaddr *)args->uservaddr; @cfam[tid] = $sa->sa_family + 1;
}}
tracepoint:syscalls:sys_exit_connect /{in_cg}/ {{
  $f = @cfam[tid]; delete(@cfam[tid]);
  if ($f == 3 || $f == 11) {{ @sandbox[pid, comm, cgroup, 1, args->ret] = count(); }}
}}
"""
    maps = _MAPS if in_cg else _MAPS[:-1]  # @sandbox exists only with watched cgroups
    # @sock after @tx and @rx: every socket life in a dumped counter was described before it was counted
    dump = "".join(f"print({m}); " for m in maps) + f'printf("{_MARK}\\n");'
    clear = "".join(f"clear({m}); " for m in (*maps, "@born", *(("@fam", "@cfam") if in_cg else ())))
    text += f"interval:ms:{ms} {{ {dump} }}\nEND {{ {dump} {clear}}}\n"
    text += f'BEGIN {{ printf("{_ATTACHED}\\n"); }}\n'
    if flush_pid is not None:
        if flush_libc is not None:
            text += (f"uprobe:{flush_libc}:getsid /pid == {flush_pid} && arg0 == {FLUSH_PID}/ "
                     f"{{ {dump} }}\n")
        else:
            text += (f"tracepoint:syscalls:sys_enter_getsid /pid == {flush_pid} && args->pid == {FLUSH_PID}/ "
                     f"{{ {dump} }}\n")
    return text


def _ip(value: int) -> str:
    """A ``__be32`` read as a host (little-endian) integer, as dotted IPv4."""
    return socket.inet_ntoa(struct.pack("<I", value & 0xFFFFFFFF))


def _split(key: str, trailing: int) -> tuple[int, str, list[int]]:
    """``pid,comm,n1,...`` -> (pid, comm, [n...]); comm may itself hold commas."""
    pid, rest = key.split(",", 1)
    parts = rest.rsplit(",", trailing)
    return int(pid), parts[0], [int(x) for x in parts[1:]]


def parse_maps(maps: dict[str, dict[str, Any]], when: float) -> Snapshot:
    """Turn one dump of the program's maps (``{"@tx": {"sk,birth": n}, "@sock": {"sk,birth": [pid, comm,
    cgroup, laddr, lport, raddr, rport]}, ...}``) into a :class:`Snapshot`."""
    snap = Snapshot(time=when)
    # one socket life: "sk,birth" (the struct sock's address, printed in hex, and when it was first seen),
    # the same text in @tx, @rx and @sock
    lives: dict[str, SocketKey] = {}
    for key, (pid, comm, cg, la, lp, ra, rp) in maps.get("@sock", {}).items():
        lives[key] = SocketKey(int(pid), str(comm), int(cg), _ip(int(la)), int(lp), _ip(int(ra)), int(rp))
    for name, target in (("@tx", snap.tx), ("@rx", snap.rx)):
        for key, value in maps.get(name, {}).items():
            sk = lives.get(key)
            if sk is None:  # cannot happen (@sock is written first, dumped after): nothing to attribute to
                log.debug("bpftrace counted socket life %s without describing it", key)
                continue
            # several lives of one socket (a reused struct sock, a read after close) add up per socket
            target[sk] = target.get(sk, 0) + int(value)
    for key, value in maps.get("@inbound", {}).items():
        a, b, c, d, rport, lport = (int(x) for x in key.split(","))
        snap.inbound[(f"{a}.{b}.{c}.{d}", rport, lport)] = int(value)
    for key, value in maps.get("@retrans", {}).items():
        v = [int(x) for x in key.split(",")]
        snap.retransmits[(".".join(map(str, v[0:4])), v[4], ".".join(map(str, v[5:9])), v[9])] = int(value)
    for key, value in maps.get("@rst", {}).items():
        a, b, c, d, lport = (int(x) for x in key.split(","))
        k = (f"{a}.{b}.{c}.{d}", lport)
        snap.resets[k] = snap.resets.get(k, 0) + int(value)
    for key, value in maps.get("@sandbox", {}).items():
        pid, comm, (cg, what, ret) = _split(key, 3)
        snap.sandbox[SandboxKey(pid, comm, cg, _SOCKET_WHAT.get(what, str(what)), ret)] = int(value)
    return snap


class BpfBackend:
    """Runs :func:`bpftrace_program` in a bpftrace subprocess and hands each dump to ``on_snapshot``.

    Parameters
    ----------
    rules:
        What to watch (ports, cgroups).
    interval:
        Seconds between dumps.
    on_snapshot:
        Called from the reader thread with each complete :class:`Snapshot` (cumulative counters).
    """

    name = "bpftrace"

    def __init__(self, rules: MonitorRules, interval: float, on_snapshot: Callable[[Snapshot], None]) -> None:
        self.rules = rules
        self.interval = interval
        self.on_snapshot = on_snapshot
        self.program = bpftrace_program(rules, interval, flush_pid=os.getpid(), flush_libc=libc_path())
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self._attached = threading.Event()

    def start(self, timeout: float = 60.0) -> None:
        """Start bpftrace and wait until its probes are attached.

        Raises
        ------
        ConfigError
            bpftrace exited or did not attach within ``timeout``; the message carries its stderr.
        """
        import time

        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(["bpftrace", "-B", "line", "-f", "json", "-e", self.program],
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._thread = threading.Thread(target=self._read, name="fedra-bpftrace", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._attached.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = self._stderr_text() or f"exit status {self._proc.poll()}"
                self.stop()
                raise ConfigError(f"expected bpftrace to attach its tracepoints within {timeout:.0f} s, "
                                  f"but it did not: {why}; use the ss fallback (--fallback) on this host")

    def flush(self) -> None:
        """Ask the program for a dump now (it arrives, as every dump, through ``on_snapshot``)."""
        with contextlib.suppress(OSError):  # ESRCH, always: the call is only a signal to the probe
            os.getsid(FLUSH_PID)

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if "RLIMIT_MEMLOCK" not in ln]
        return " ".join(lines).strip()

    def _read(self) -> None:
        """Group the map dumps on stdout into snapshots, one per marker line."""
        import time

        assert self._proc is not None and self._proc.stdout is not None
        maps: dict[str, dict[str, Any]] = {}
        for line in self._proc.stdout:
            if not line.strip():
                continue  # an empty map prints a blank line
            try:
                msg: dict[str, Any] = json.loads(line)
            except ValueError:
                log.debug("bpftrace printed a line that is not JSON: %r", line)
                continue
            kind = msg.get("type")
            if kind == "printf" and str(msg.get("data", "")).strip() == _ATTACHED:
                self._attached.set()
            elif kind == "map":
                maps.update(msg["data"])
            elif kind == "printf" and str(msg.get("data", "")).strip() == _MARK:
                try:
                    self.on_snapshot(parse_maps(maps, time.time()))
                except Exception:  # the reader must outlive a failing callback
                    log.exception("the monitor failed on a bpftrace snapshot; continuing")
                maps = {}

    def stop(self) -> None:
        """Stop bpftrace (SIGINT: it prints its maps one last time) and wait for the last snapshot."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
