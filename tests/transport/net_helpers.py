"""Shared by the tests that run ``fedra server`` and ``fedra client`` as real processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

FEDRA = str(Path(sys.executable).parent / "fedra")
TASK = Path(__file__).resolve().parents[1] / "simulation" / "softmax_task.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_job(directory: Path, *, name: str, rounds: int, seed: int, round_timeout: float | None = None) -> Path:
    """A 3-client numpy job on IID digits (``softmax_task.py``) that waits for all 3 clients."""
    timeout = "" if round_timeout is None else f"round_timeout = {round_timeout}\n"
    job = directory / "job.toml"
    job.write_text(f'''[job]
name = "{name}"
module = "{TASK}"
framework = "numpy"
rounds = {rounds}
seed = {seed}
[data]
dataset = "digits"
partition = "iid"
num_clients = 3
[strategy]
min_clients = 3
{timeout}[client]
batch_size = 16
''')
    return job


def run_network(tmp_path: Path, job: Path, *server_args: str | Path, env: dict[str, str] | None = None,
                timeout: float = 120) -> tuple[str, Path]:
    """`fedra server` and 3 `fedra client` processes (insecure, loopback, unsandboxed) running ``job``
    to the end; the final model's digest and the run directory."""
    port = free_port()
    runs = tmp_path / "runs"
    server = subprocess.Popen([FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure",
                               "--wait-clients", "60", "--output", str(runs), "--quiet",
                               *map(str, server_args)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = [subprocess.Popen([FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job),
                                 "--name", f"client-{i:04d}", "--partition", str(i), "--insecure",
                                 "--sandbox", "off"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
               for i in range(3)]
    try:
        out, err = server.communicate(timeout=timeout)
        assert server.returncode == 0, err
        for c in clients:
            _, cerr = c.communicate(timeout=30)
            assert c.returncode == 0, cerr
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.communicate()
    digest = re.search(r"model digest ([0-9a-f]{64})", out)
    assert digest is not None, out
    (run,) = runs.iterdir()
    return digest.group(1), run
