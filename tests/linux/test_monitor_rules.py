"""The traffic monitor without a kernel: parsing both backends' output and the anomaly rules on snapshots.

These run anywhere (no root, no bpftrace). The rules are fed hand-made cumulative snapshots, as a backend
would hand them, so each rule is shown to fire on what it is meant to and stay quiet otherwise.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import pytest

from fedra.errors import ConfigError
from fedra.linux import _monitor
from fedra.linux._bpf import FLUSH_PID, bpftrace_program, parse_maps
from fedra.linux._monitor import Monitor
from fedra.linux._monitor_types import (
    EVENT_KINDS,
    ConnKey,
    MonitorRules,
    SandboxKey,
    Snapshot,
    SocketKey,
)
from fedra.linux._sockdiag import parse_ss

PORT = 7788
SRV = "10.0.0.1"
C1 = "10.0.0.11"


def server_sock(peer: str, port: int, pid: int = 100) -> SocketKey:
    return SocketKey(pid, "fedra", 0, SRV, PORT, peer, port)


def client_sock(peer: str, port: int, pid: int = 200) -> SocketKey:
    return SocketKey(pid, "client", 0, peer, port, SRV, PORT)


def fed(mon: Monitor, *snaps: Snapshot) -> list[str]:
    for s in snaps:
        mon._on_snapshot(s)
    return [e.kind for e in mon.events]


def monitor(**kw: object) -> Monitor:
    rules = MonitorRules(ports=(PORT,), **kw)  # type: ignore[arg-type]
    mon = Monitor(rules, backend="ss", interval=1.0)
    return mon


# -- parsing ------------------------------------------------------------------------------------------


def test_bpftrace_program_filters_on_the_ports_and_cgroups_given() -> None:
    text = bpftrace_program(MonitorRules(ports=(7788, 9000), watch_cgroups=frozenset({4242})), 0.5)
    assert "$lp == 7788 || $lp == 9000 || $rp == 7788 || $rp == 9000 || cgroup == 4242" in text
    assert "interval:ms:500" in text and "sum(args->ret)" in text
    assert "sys_exit_socket" in text and "@sandbox" in text
    plain = bpftrace_program(MonitorRules(ports=(7788,)), 1.0)
    assert "cgroup ==" not in plain and "@sandbox" not in plain and "syscalls:" not in plain


def test_the_program_dumps_on_demand_only_for_the_monitors_own_getsid_of_an_impossible_pid() -> None:
    text = bpftrace_program(MonitorRules(ports=(7788,)), 1.0, flush_pid=4321)
    probe = next(line for line in text.splitlines() if "sys_enter_getsid" in line)
    assert f"pid == 4321 && args->pid == {FLUSH_PID}" in probe and "print(@tx)" in probe
    assert FLUSH_PID > 1 << 22  # above the largest pid_max: no real process is ever asked about
    assert "getsid" not in bpftrace_program(MonitorRules(ports=(7788,)), 1.0)
    # "attached" is BEGIN's line: bpftrace fires BEGIN once all probes are attached, not before
    assert 'BEGIN { printf("fedra-attached' in text


def test_a_round_end_asks_the_backend_for_a_fresh_snapshot_and_counts_it() -> None:
    mon = monitor()
    a = server_sock(C1, 51000)

    class Backend:  # hands over a snapshot when flushed, as a backend's thread would
        name = "fake"

        def flush(self) -> None:
            threading.Thread(target=mon._on_snapshot, args=(Snapshot(time=2, rx={a: 777}),)).start()

        def start(self, timeout: float = 0) -> None: ...

        def stop(self) -> None: ...

    mon._runner = Backend()
    mon._pending = None  # as after start(): rows go to the (absent) file
    mon.new_round(1)
    assert mon.connection(f"{C1}:51000", PORT)["upload"] == 777  # read after the flush, not before
    assert mon._window_base == {ConnKey(f"{C1}:51000", PORT): 777}


def test_parse_maps_joins_per_socket_counters_with_the_socket_described_once() -> None:
    # @tx/@rx count per socket life (struct sock address, birth time); @sock describes each life once.
    # 127.0.0.1 as a little-endian read of the __be32 is 16777343
    srv = [42, "grpc,pool", 3, 16777343, 7788, 16777343, 51000]  # a comm may hold commas
    maps = {"@tx": {"0xffff8881000,5": 1000, "0xffff8881000,9": 24, "0xffff8882000,6": 7},
            "@rx": {"0xffff8881000,5": 5},
            "@sock": {"0xffff8881000,5": srv, "0xffff8881000,9": srv,  # two lives of one socket (a read after close)
                      "0xffff8882000,6": [43, "python3", 0, 16777343, 51000, 16777343, 7788]},
            "@inbound": {"10,0,0,11,51000,7788": 1},
            "@retrans": {"10,0,0,1,7788,10,0,0,11,51000": 7},
            "@rst": {"10,0,0,11,7788": 3},
            "@sandbox": {"77,curl,99,0,-1": 2}}
    snap = parse_maps(maps, 1.0)
    assert snap.tx == {SocketKey(42, "grpc,pool", 3, "127.0.0.1", 7788, "127.0.0.1", 51000): 1024,
                       SocketKey(43, "python3", 0, "127.0.0.1", 51000, "127.0.0.1", 7788): 7}
    assert snap.rx == {SocketKey(42, "grpc,pool", 3, "127.0.0.1", 7788, "127.0.0.1", 51000): 5}
    assert snap.inbound == {("10.0.0.11", 51000, 7788): 1}
    assert snap.retransmits == {("10.0.0.1", 7788, "10.0.0.11", 51000): 7}
    assert snap.resets == {("10.0.0.11", 7788): 3}
    assert snap.sandbox == {SandboxKey(77, "curl", 99, "socket", -1): 2}


def test_the_per_call_probes_key_by_socket_and_describe_a_socket_once() -> None:
    text = bpftrace_program(MonitorRules(ports=(7788,)), 1.0)
    send = text.split("tracepoint:sock:sock_send_length", 1)[1].split("\n}\n", 1)[0]
    head, fed = send.split("if ($lp == 7788 || $rp == 7788) {", 1)
    first, count = fed.split("    }\n", 1)  # the first call of a socket life, then every call
    # every call: the two ports (the filter), then for a federation socket one lookup and one sum
    assert not re.search(r"\b(comm|cgroup|pid)\b", head + count)  # no helper calls, no string copy
    assert "$b = @born[args->sk];" in first and "@tx[args->sk, $b] = sum(args->ret)" in count
    # the first call of a socket life describes it, once
    assert "if ($b == 0)" in first and "@born[args->sk] = $b" in first
    assert "@sock[args->sk, $b] = (pid, comm, cgroup" in first
    # a new connection or a close ends a socket life (a reused struct sock gets a new key)
    state = text.split("tracepoint:sock:inet_sock_set_state", 1)[1].split("\n}\n", 1)[0]
    assert "args->newstate == 2 || args->newstate == 3 || args->newstate == 7" in state
    assert "delete(@born[args->skaddr])" in state
    assert "printf(" not in send and "printf(" not in state


def test_the_dump_on_demand_is_a_uprobe_on_the_monitors_libc_when_known() -> None:
    text = bpftrace_program(MonitorRules(ports=(7788,)), 1.0, flush_pid=4321, flush_libc="/lib/libc.so.6")
    probe = next(line for line in text.splitlines() if "getsid" in line)
    assert probe.startswith("uprobe:/lib/libc.so.6:getsid /pid == 4321 && arg0 == ")
    assert str(FLUSH_PID) in probe and "print(@tx)" in probe
    assert "syscalls:" not in text  # no syscall tracepoint: other processes' calls stay on the fast path


SS = """\
LISTEN 0 128 10.0.0.1:7788 0.0.0.0:* users:(("fedra",pid=100,fd=3)) ino:1 sk:1 cgroup:/ <-> bbr cwnd:10
ESTAB 0 0 10.0.0.1:7788 10.0.0.11:51000 users:(("fedra",pid=100,fd=5)) ino:9 sk:1a cgroup:/ <-> ts sack bbr rto:204 bytes_sent:1500 bytes_retrans:500 bytes_acked:1001 bytes_received:2048 retrans:0/4 segs_out:2
ESTAB 0 0 [::ffff:10.0.0.1]:7788 [::ffff:10.0.0.12]:51001 ino:0 sk:1b <-> bytes_received:10
"""


def test_parse_ss_reads_owner_counters_and_mapped_addresses() -> None:
    socks = parse_ss(SS)
    assert [s.state for s in socks] == ["LISTEN", "ESTAB", "ESTAB"]
    est = socks[1]
    assert (est.comm, est.pid, est.laddr, est.lport, est.raddr, est.rport) == ("fedra", 100, SRV, PORT, C1, 51000)
    assert (est.tx, est.rx, est.retrans, est.cookie) == (1000, 2048, 4, 0x1A)
    assert (socks[2].laddr, socks[2].raddr, socks[2].pid, socks[2].rx) == (SRV, "10.0.0.12", 0, 10)


# -- rules --------------------------------------------------------------------------------------------


def test_rules_reject_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="TCP ports"):
        MonitorRules(ports=())
    with pytest.raises(ConfigError, match="k > 0"):
        MonitorRules(ports=(1,), k=0)
    with pytest.raises(ConfigError, match="backend"):
        Monitor(MonitorRules(ports=(1,)), backend="kprobe")  # type: ignore[arg-type]


def test_upload_counts_a_connection_once_when_both_ends_are_seen() -> None:
    mon = monitor()
    peer = (C1, 51000)
    fed(mon, Snapshot(time=1, rx={server_sock(*peer): 1000}, tx={client_sock(*peer): 1000,
                                                               server_sock(*peer): 50}))
    assert mon.connection(f"{C1}:51000", PORT) == {"upload": 1000, "download": 50}
    counters = mon.counters()
    assert counters["connections"] == [{"client": f"{C1}:51000", "server_port": PORT, "upload": 1000,
                                        "download": 50}]
    assert counters["cgroups"] == {"0": {"tx": 1050, "rx": 1000}}


def test_exfiltration_fires_once_per_connection_and_round_above_k_times() -> None:
    mon = monitor(expected_update_bytes=1000, k=3, overhead_bytes=0)
    a, b = server_sock(C1, 51000), server_sock("10.0.0.12", 51001)
    assert fed(mon, Snapshot(time=1, rx={a: 2999, b: 100})) == []
    assert fed(mon, Snapshot(time=2, rx={a: 3001, b: 200})) == ["exfiltration"]
    assert fed(mon, Snapshot(time=3, rx={a: 9000, b: 300})) == ["exfiltration"]  # not again this round
    ev = mon.events[0]
    assert (ev.peer, ev.bytes, ev.pid, ev.comm) == (f"{C1}:51000", 3001, 100, "fedra")
    mon.on_round_end(type("R", (), {"round": 1})())
    assert fed(mon, Snapshot(time=4, rx={a: 11000, b: 400})) == ["exfiltration"]  # 2000 this round
    assert fed(mon, Snapshot(time=5, rx={a: 12001, b: 500})) == ["exfiltration", "exfiltration"]


def test_each_round_end_writes_that_rounds_bytes_and_events_keyed_by_round() -> None:
    mon = monitor(expected_update_bytes=1000, k=3, overhead_bytes=0)
    a, b = server_sock(C1, 51000), server_sock("10.0.0.12", 51001)
    fed(mon, Snapshot(time=1, rx={a: 500, b: 100}, tx={a: 2000, b: 2000}))
    mon.on_round_end(type("R", (), {"round": 1})())
    fed(mon, Snapshot(time=2, rx={a: 4600, b: 700}, tx={a: 4000, b: 4000}))  # a: 4100 up in round 2
    mon.on_round_end(type("R", (), {"round": 2})())
    mon.new_round(3)  # nothing moved in round 3
    rows = [r for r in mon._pending or [] if r["type"] == "round"]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert (rows[0]["upload"], rows[0]["download"], rows[0]["events"]) == (600, 4000, {})
    assert rows[1]["connections"] == [
        {"client": f"{C1}:51000", "server_port": PORT, "upload": 4100, "download": 2000},
        {"client": "10.0.0.12:51001", "server_port": PORT, "upload": 600, "download": 2000}]
    assert rows[1]["events"] == {"exfiltration": 1} and rows[1]["upload"] == 4700
    assert (rows[2]["upload"], rows[2]["download"], rows[2]["connections"], rows[2]["events"]) == (0, 0, [], {})


def test_expected_update_size_comes_from_the_run_when_not_given() -> None:
    mon = monitor(k=2, overhead_bytes=1)
    mon.on_run_start(type("Info", (), {"model_bytes": 500})())
    assert fed(mon, Snapshot(time=1, rx={server_sock(C1, 1): 1001})) == []
    assert fed(mon, Snapshot(time=2, rx={server_sock(C1, 1): 1002})) == ["exfiltration"]


def test_retransmit_storm_is_per_interval() -> None:
    mon = monitor(retransmit_threshold=10)
    four = (SRV, PORT, C1, 51000)
    sock = server_sock(C1, 51000)
    assert fed(mon, Snapshot(time=1, retransmits={four: 9}, tx={sock: 1})) == []
    assert fed(mon, Snapshot(time=2, retransmits={four: 18}, tx={sock: 1})) == []  # 9 in this interval
    assert fed(mon, Snapshot(time=3, retransmits={four: 28}, tx={sock: 1})) == ["retransmit_storm"]
    ev = mon.events[0]
    assert (ev.peer, ev.count, ev.pid) == (f"{C1}:51000", 10, 100)


def test_reset_storm_sums_resets_of_one_interval() -> None:
    mon = monitor(reset_threshold=5)
    assert fed(mon, Snapshot(time=1, resets={(C1, PORT): 2, ("10.0.0.12", PORT): 2})) == []
    assert fed(mon, Snapshot(time=2, resets={(C1, PORT): 6, ("10.0.0.12", PORT): 3})) == ["reset_storm"]
    assert mon.events[0].count == 5 and mon.events[0].peer == f"{C1}:{PORT}"


def test_unadmitted_peer_fires_once_per_connection_and_only_when_configured() -> None:
    mon = monitor(admitted=frozenset({C1}))
    inbound = {(C1, 51000, PORT): 1, ("10.0.0.66", 40000, PORT): 1}
    assert fed(mon, Snapshot(time=1, inbound=inbound), Snapshot(time=2, inbound=inbound)) == ["unadmitted_peer"]
    assert mon.events[0].peer == "10.0.0.66:40000"
    assert fed(monitor(), Snapshot(time=1, inbound=inbound)) == []


def test_sandbox_attempts_fire_on_each_new_attempt() -> None:
    mon = monitor(watch_cgroups=frozenset({99}))
    denied = SandboxKey(77, "train", 99, "socket", -1)
    assert fed(mon, Snapshot(time=1, sandbox={denied: 1}), Snapshot(time=2, sandbox={denied: 1}),
               Snapshot(time=3, sandbox={denied: 3})) == ["sandbox_connect", "sandbox_connect"]
    assert [e.count for e in mon.events] == [1, 2]
    assert "failed with -1" in mon.events[0].detail and mon.events[0].cgroup == 99


def test_events_go_to_callbacks_logs_and_jsonl(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[str] = []
    rules = MonitorRules(ports=(PORT,), admitted=frozenset())

    class FakeSs:
        name = "ss"

        def __init__(self, *a: object, **k: object) -> None:
            pass

        def start(self, timeout: float = 0) -> None:
            pass

        def stop(self) -> None:
            pass

    monkeypatch.setattr(_monitor, "SsBackend", FakeSs)
    monkeypatch.setattr(_monitor, "bpf_unavailable_reason", lambda: "no bpftrace here")
    mon = Monitor(rules, on_event=[lambda e: got.append(e.kind)], jsonl=tmp_path / "t.jsonl")
    with caplog.at_level(logging.WARNING, logger="fedra.monitor"), mon:
        mon._on_snapshot(Snapshot(time=1, inbound={(C1, 1, PORT): 1}))
    assert mon.backend == "ss" and mon.fallback_reason == "no bpftrace here"
    assert got == ["unadmitted_peer"]
    assert "falling back to polling ss" in caplog.text and "unadmitted_peer" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["type"] for r in rows] == ["monitor", "event", "counters"]
    assert rows[0]["backend"] == "ss" and rows[0]["fallback_reason"] == "no bpftrace here"
    assert rows[1]["kind"] == "unadmitted_peer" and set(rows[1]) >= {"pid", "comm", "peer", "bytes", "detail"}
    assert set(EVENT_KINDS) >= {rows[1]["kind"]}


def test_forcing_bpftrace_where_it_cannot_run_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_monitor, "bpf_unavailable_reason", lambda: "bpftrace is not installed")
    with pytest.raises(ConfigError, match="bpftrace is not installed"):
        Monitor(MonitorRules(ports=(PORT,)), backend="bpftrace").start()


def test_ss_backend_counts_a_socket_once_through_accept_close_and_disappearance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before accept() and after close() ss shows the socket without owner or inode; its cookie stays."""
    from fedra.linux import _sockdiag

    line = "{state} 0 0 10.0.0.1:7788 10.0.0.11:51000 {users}ino:{ino} sk:2a <-> bytes_received:{rx} segs_in:3"
    polls = iter([
        "",  # the monitor starts before the connection (one open at the first poll counts from then on)
        line.format(state="ESTAB", users="", ino=0, rx=4000),  # queued, not yet accepted
        line.format(state="ESTAB", users='users:(("fedra",pid=100,fd=5)) ', ino=77, rx=10000),
        line.format(state="LAST-ACK", users="", ino=0, rx=10000),  # closed by its owner
        "",  # gone
    ])

    class Done:
        returncode = 0
        stderr = ""

        def __init__(self, out: str) -> None:
            self.stdout = out

    monkeypatch.setattr(_sockdiag.subprocess, "run", lambda *a, **k: Done(next(polls)))
    monkeypatch.setattr(_sockdiag.SsBackend, "_resets", lambda self, timeout: 0)
    backend = _sockdiag.SsBackend(MonitorRules(ports=(PORT,)), 1.0, lambda s: None)
    snaps = [backend.poll() for _ in range(5)]
    assert [sum(s.rx.values()) for s in snaps] == [0, 4000, 10000, 10000, 10000]
    (key,) = snaps[-1].rx
    assert (key.pid, key.comm) == (100, "fedra")  # the owner seen while it was open
    assert snaps[-1].inbound == {(C1, 51000, PORT): 1}


def test_missing_bpftrace_and_missing_cgroup_are_explained(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from fedra.linux import _bpf

    monkeypatch.setattr(_bpf.shutil, "which", lambda name: None)
    assert _bpf.bpf_unavailable_reason() == "bpftrace is not installed (apt-get install bpftrace)"
    with pytest.raises(ConfigError, match=r"expected a cgroup v2 directory.*does not exist"):
        _bpf.cgroup_id(tmp_path / "no-such-group")
    assert _bpf.cgroup_id(tmp_path) == tmp_path.stat().st_ino


def test_libc_path_names_a_library_file_this_process_maps() -> None:
    from fedra.linux._bpf import TRACEFS, libc_path

    path = libc_path()
    if not (TRACEFS / "uprobe_events").exists():
        assert path is None  # no uprobes: the dump on demand stays on the getsid tracepoint
    else:  # this process is linked to a C library (glibc here) that the kernel can put a uprobe on
        assert path is not None and Path(path).is_file() and Path(path).name.startswith("libc")
    assert libc_path(1 << 30) is None  # no such process
