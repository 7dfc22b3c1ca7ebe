"""A client process killed (SIGKILL) in the middle of a round is a dropout: the round closes at its deadline
with the others, and the job completes without it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from net_helpers import FEDRA, free_port, write_job

pytest.importorskip("grpc")




@pytest.mark.slow
def test_a_client_killed_mid_round_is_a_dropout(tmp_path: Path) -> None:
    job = write_job(tmp_path, name="dropout", rounds=4, seed=2, round_timeout=3)
    port = free_port()
    run = tmp_path / "run"
    server = subprocess.Popen([FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure", "--quiet",
                               "--wait-clients", "60", "--run-dir", str(run)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    env = {**os.environ, "FEDRA_TEST_SLOW": "0.3"}
    clients = [subprocess.Popen([FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), "--insecure"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for i in range(3)]
    metrics = run / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().strip()):
            time.sleep(0.02)
        time.sleep(0.1)  # round 2 has started and every client is training (0.3 s per task)
        clients[0].send_signal(signal.SIGKILL)
        clients[0].communicate()
        _, err = server.communicate(timeout=120)
        assert server.returncode == 0, err
        for c in clients[1:]:
            c.communicate(timeout=30)
            assert c.returncode == 0
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.communicate()  # reaps it and closes its pipes
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4] and all(r["completed"] for r in rows), rows
    # round 2 was under way when client 0 died: its task lapsed at the deadline, the others' were taken
    assert rows[1]["sampled"] == 3 and rows[1]["accepted"] == 2, rows[1]
    assert "client-0000" not in rows[1]["participants"]
    assert all(r["accepted"] == 2 and "client-0000" not in r["participants"] for r in rows[1:])
