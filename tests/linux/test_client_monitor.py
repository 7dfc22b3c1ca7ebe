"""``fedra client --monitor`` end to end on loopback: a server and two sandboxed clients, each client with
its own traffic monitor watching its server connection and its sandbox's cgroup v2 label.

client-0000's training tries to open a TCP connection in round 2 (seccomp denies the socket); its
monitor reports a ``sandbox_connect`` event naming its label group, and nothing else. client-0001 trains
cleanly and its monitor reports no event at all. Both files carry one ``round`` line per round with the
bytes of that round. Needs root, bubblewrap, a cgroup2 mount and bpftrace; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox_helpers import require_sandbox

from fedra.linux import Limits
from fedra.linux._bpf import bpf_unavailable_reason, cgroup2_mount

FEDRA = str(Path(sys.executable).parent / "fedra")
SOFTMAX = Path(__file__).resolve().parents[1] / "simulation" / "softmax_task.py"

CONNECT = '''

import socket as _socket

_train = train


def train(m, data, config):  # client-0000 tries the network in round 2; the sandbox denies it
    if config["round"] == 2 and config["client_id"] == "client-0000":
        try:
            _socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        except OSError:
            pass
    return _train(m, data, config)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_client_monitor_reports_a_sandboxed_connect_and_nothing_for_a_clean_client(tmp_path: Path) -> None:
    require_sandbox(Limits(pids=64))
    why = bpf_unavailable_reason() or (None if cgroup2_mount() else "no cgroup2 mount to label the sandbox")
    if why is not None:
        print(f"skipped: {why}")
        pytest.skip(f"the client monitor test needs eBPF and a cgroup2 label: {why}")
    app = tmp_path / "app"
    app.mkdir()
    (app / "task.py").write_text(SOFTMAX.read_text() + CONNECT)
    job = tmp_path / "job.toml"
    job.write_text('''[job]
name = "watched"
module = "app/task.py"
framework = "numpy"
rounds = 3
seed = 3
[data]
dataset = "digits"
partition = "iid"
num_clients = 2
[strategy]
min_clients = 2
[client]
batch_size = 16
[sandbox]
enabled = "on"
pids = 64
''')
    port = _free_port()
    server = subprocess.Popen([FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure",
                               "--wait-clients", "90", "--output", str(tmp_path / "runs"), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    traffic = [tmp_path / f"traffic-{i}.jsonl" for i in range(2)]
    clients = [subprocess.Popen([FEDRA, "-v", "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), "--insecure",
                                 "--work-dir", str(tmp_path / f"work-{i}"), "--monitor",
                                 "--traffic-jsonl", str(traffic[i])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    try:
        _, err = server.communicate(timeout=180)
        assert server.returncode == 0, err
        outs = [c.communicate(timeout=60) for c in clients]
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (c, (cout, cerr)) in enumerate(zip(clients, outs, strict=True)):
        assert c.returncode == 0, cerr
        assert f"client-{i:04d}: served 3 tasks" in cout
    attacked, clean = (_lines(t) for t in traffic)
    assert attacked[0]["type"] == "monitor" and attacked[0]["backend"] == "bpftrace"
    events = [r for r in attacked if r["type"] == "event"]
    assert events and {e["kind"] for e in events} == {"sandbox_connect"}, events
    assert all(e["cgroup"] > 0 and e["pid"] > 0 for e in events)
    assert "sandbox_connect" in outs[0][1]  # logged too
    assert [r for r in clean if r["type"] == "event"] == []
    assert "traffic anomaly" not in outs[1][1]
    model_bytes = (64 * 10 + 10) * 4  # the softmax model on digits: float32 weights and biases
    for rows in (attacked, clean):
        rounds = [r for r in rows if r["type"] == "round"]
        assert [r["round"] for r in rounds] == [0, 1, 2, 3]  # one line per round (0: before the first task)
        # a client's round N runs from task N's arrival to task N+1's: its update up, the next model down
        # (at least: both clients share this host, so each monitor also sees the other's connection)
        assert all(r["upload"] > model_bytes for r in rounds[1:]), rounds
        assert all(r["download"] > model_bytes for r in rounds[:3]), rounds
    assert sum(r["events"].get("sandbox_connect", 0) for r in attacked if r["type"] == "round") == len(events)
