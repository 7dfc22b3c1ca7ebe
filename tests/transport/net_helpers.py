"""Shared by the tests that run ``fedra server`` and ``fedra client`` as real processes."""

from __future__ import annotations

import socket
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
