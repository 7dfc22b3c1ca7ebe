"""Crash recovery: the server is killed with SIGKILL at random moments of a job and restarted on the same
run directory; every restart resumes from its last checkpoint and the final model is the one an
uninterrupted run with the same seed produces."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("grpc")

from net_helpers import FEDRA, free_port, write_job

from fedra.job import load_job
from fedra.runtime import SqlStateStore
from fedra.simulation import simulate

ROUNDS = 8
TRIALS = 10



@pytest.mark.slow
def test_kill_9_the_server_at_random_moments_and_resume(tmp_path: Path) -> None:
    job = write_job(tmp_path, name="crash", rounds=ROUNDS, seed=3, round_timeout=30)
    expected = simulate(load_job(job)).digest
    rng = random.Random(1234)
    env = {**os.environ, "FEDRA_TEST_SLOW": "0.08"}
    killed_after: list[int] = []
    for trial in range(TRIALS):
        port = free_port()
        run_dir = tmp_path / f"run-{trial}"
        server_cmd = [FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure", "--quiet",
                      "--wait-clients", "60", "--run-dir", str(run_dir)]
        clients = [subprocess.Popen([FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                     "--name", f"client-{i:04d}", "--partition", str(i), "--insecure"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                   for i in range(3)]
        procs = list(clients)
        try:
            server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(server)
            # a random moment: after a random number of completed rounds, plus a random part of the next
            target = rng.randrange(0, ROUNDS)
            metrics = run_dir / "metrics.jsonl"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and server.poll() is None:
                done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
                if done >= target:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            server.send_signal(signal.SIGKILL)
            server.wait()
            ckpt = SqlStateStore(f"sqlite:///{run_dir / 'state.db'}", job="crash").load()
            killed_after.append(ckpt.round if ckpt else 0)
            restarted = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(restarted)
            out, err = restarted.communicate(timeout=120)
            assert restarted.returncode == 0, err
            for c in clients:
                c.communicate(timeout=60)
                assert c.returncode == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()  # reaps it and closes its pipes
        digest = re.search(r"model digest ([0-9a-f]{64})", out)
        assert digest is not None and digest.group(1) == expected, f"trial {trial}: {out}"
        rounds = [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert rounds == list(range(1, ROUNDS + 1)), f"trial {trial}: rounds recorded {rounds}"
    print("checkpoint round at each kill:", killed_after)
    # the kills landed at different points of the job, mid-job included
    assert len(set(killed_after)) >= 3 and any(0 < r < ROUNDS for r in killed_after), killed_after
