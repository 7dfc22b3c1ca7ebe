"""``fedra monitor`` and ``fedra server --monitor`` on loopback.

The ss half of ``fedra monitor`` needs neither root nor bpftrace; the eBPF half and the server run skip
with the reason where bpftrace or grpc is missing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedra.cli.main import app
from fedra.linux._bpf import bpf_unavailable_reason

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transport"))

SENT = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_exchange(port: int, started: Path, hold: float) -> dict[str, object]:
    """Once the monitor has written its first line to ``started``, one client sends SENT bytes to a
    listener on 127.0.0.1 and holds the connection ``hold`` seconds."""
    report: dict[str, object] = {}

    def run() -> None:
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", port))
            srv.listen(1)
            for _ in range(600):  # bounded: 60 s for the monitor to start
                if started.exists() and started.read_text().strip():
                    break
                time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                conn, _ = srv.accept()
                with conn:
                    report["local"] = "{}:{}".format(*c.getsockname())
                    c.sendall(b"x" * SENT)
                    got = 0
                    while got < SENT:
                        got += len(conn.recv(1 << 16))
                    report["received"] = got
                    time.sleep(hold)

    t = threading.Thread(target=run)
    t.start()
    report["thread"] = t
    return report


@pytest.mark.slow
@pytest.mark.parametrize("fallback", [True, False], ids=["ss", "bpftrace"])
def test_fedra_monitor_counts_and_reports_an_unadmitted_peer(tmp_path: Path, fallback: bool) -> None:
    if not fallback and bpf_unavailable_reason() is not None:
        pytest.skip(str(bpf_unavailable_reason()))
    port = free_port()
    out = tmp_path / "traffic.jsonl"
    report = loopback_exchange(port, out, hold=1.0)
    args = ["monitor", "--port", str(port), "--duration", "4", "--interval", "0.25", "--admit", "10.9.9.9",
            "--jsonl", str(out), *(["--fallback"] if fallback else [])]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    thread = report["thread"]
    assert isinstance(thread, threading.Thread)
    thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert report["received"] == SENT
    assert ("with ss" in result.output) == fallback
    assert "unadmitted_peer" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["type"] == "monitor" and rows[0]["backend"] == ("ss" if fallback else "bpftrace")
    events = [r for r in rows if r["type"] == "event"]
    assert [e["kind"] for e in events] == ["unadmitted_peer"]
    assert events[0]["peer"] == report["local"]
    final = rows[-1]
    assert final["type"] == "counters"
    (conn,) = [c for c in final["connections"] if c["client"] == report["local"]]
    assert abs(conn["upload"] - SENT) <= 0.01 * SENT


@pytest.mark.slow
def test_fedra_server_monitor_writes_traffic_next_to_metrics(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    from net_helpers import FEDRA, write_job

    job = write_job(tmp_path, name="mon", rounds=2, seed=3)
    port = free_port()
    server = subprocess.Popen([FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure",
                               "--wait-clients", "60", "--output", str(tmp_path / "runs"), "--quiet",
                               "--monitor"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = [subprocess.Popen([FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), "--insecure"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(3)]
    try:
        sout, serr = server.communicate(timeout=120)
        assert server.returncode == 0, serr
        for c in clients:
            c.communicate(timeout=30)
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert "traffic monitor:" in sout
    (run,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run / "traffic.jsonl").read_text().splitlines()]
    assert rows[0]["type"] == "monitor" and rows[0]["ports"] == [port]
    # counters at each round end (and every counters_every seconds: round 0 while clients connect)
    assert {1, 2} <= {r["round"] for r in rows if r["type"] == "counters"}
    # one "round" line per round, keyed like metrics.jsonl, with the bytes the server saw in all
    per_round = [r for r in rows if r["type"] == "round"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in per_round] == [m["round"] for m in metrics] == [1, 2]
    assert all(r["events"] == {} and r["backend"] == rows[0]["backend"] for r in per_round)
    final = rows[-1]
    assert len([c for c in final["connections"] if c["upload"] > 0]) >= 3
    exfil = [r for r in rows if r["type"] == "event" and r["kind"] in ("exfiltration", "unadmitted_peer")]
    assert exfil == []
