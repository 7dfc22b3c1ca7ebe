"""End to end: ``fedra server`` and three sandboxed ``fedra client`` processes on loopback; one client's
training hogs memory in round 2. That round counts it as a failed client with the reason "out of memory
(limit N MiB)", the client's next worker takes round 3, and the job completes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_helpers import require_sandbox

from fedra.linux import Limits
from fedra.observe import read_jsonl

FEDRA = str(Path(sys.executable).parent / "fedra")
SOFTMAX = Path(__file__).resolve().parents[1] / "simulation" / "softmax_task.py"
LIMIT_MIB = 160

HOG = '''

_train = train


def train(m, data, config):  # client-0001 asks for 1 GiB in round 2, far above its limit
    if config["round"] == 2 and config["client_id"] == "client-0001":
        np.ones(1 << 27).sum()
    return _train(m, data, config)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_client_out_of_memory_is_that_rounds_dropout_and_the_job_completes(tmp_path: Path) -> None:
    require_sandbox(Limits(memory_mib=LIMIT_MIB, pids=64))
    app = tmp_path / "app"
    app.mkdir()
    (app / "task.py").write_text(SOFTMAX.read_text() + HOG)
    job = tmp_path / "job.toml"
    job.write_text(f'''[job]
name = "oom"
module = "app/task.py"
framework = "numpy"
rounds = 3
seed = 5
[data]
dataset = "digits"
partition = "iid"
num_clients = 3
[strategy]
min_clients = 3
[client]
batch_size = 16
[sandbox]
enabled = "on"
memory_mib = {LIMIT_MIB}
pids = 64
''')
    port = _free_port()
    server = subprocess.Popen([FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure",
                               "--wait-clients", "60", "--output", str(tmp_path / "runs"), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = [subprocess.Popen([FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), "--insecure",
                                 "--work-dir", str(tmp_path / f"work-{i}")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(3)]
    try:
        _, err = server.communicate(timeout=120)
        assert server.returncode == 0, err
        outs = [c.communicate(timeout=30) for c in clients]
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (c, (cout, cerr)) in enumerate(zip(clients, outs, strict=True)):
        assert c.returncode == 0, cerr
        assert f"client-{i:04d}: served 3 tasks" in cout  # the failed task was answered, then served on
        assert ("out of memory" in cerr) == (i == 1), cerr
    (run,) = (tmp_path / "runs").iterdir()
    records = read_jsonl(run / "metrics.jsonl")
    assert [r.round for r in records] == [1, 2, 3]
    assert all(r.completed for r in records)
    assert records[1].failures == {f"client error: out of memory (limit {LIMIT_MIB} MiB)": 1}
    assert records[1].accepted == 2 and sorted(records[1].participants) == ["client-0000", "client-0002"]
    assert records[0].failures == records[2].failures == {}
    assert records[2].accepted == 3  # client-0001's fresh worker trained round 3
