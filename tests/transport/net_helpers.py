"""Shared by the tests that run ``fedra server`` and ``fedra client`` as real processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def run_in_threads(spec: Any, wrap: Callable[[str, Any, threading.Event], Any] | None = None) -> Any:
    """``spec`` run over real gRPC on loopback: the server's driver built as ``fedra server`` builds it
    (strategy, privacy, noise seed, secure aggregation), one ``serve`` thread per client of the job.

    ``wrap(client_id, connector, stop)`` may replace a client's connector (e.g. one that dies mid-round).
    Returns the driver's :class:`~fedra.runtime.RunResult`.
    """
    from fedra.app import UserApp
    from fedra.runtime import RoundDriver, serve
    from fedra.simulation import (
        build_privacy,
        build_secure,
        build_strategy,
        client_ids,
        driver_config,
        load_data,
        noise_seed,
    )
    from fedra.transport.grpc import GrpcConnector, GrpcTransport

    fed = load_data(spec)
    ids = client_ids(len(fed.partitions))
    server = GrpcTransport("127.0.0.1:0")
    stops = [threading.Event() for _ in ids]
    threads = []
    try:
        for i, cid in enumerate(ids):
            app = UserApp(spec.module_path(), framework="numpy", partitions=lambda _c, i=i: fed.partitions[i])
            conn: Any = GrpcConnector(f"127.0.0.1:{server.port}", client_id=cid)
            if wrap is not None:
                conn = wrap(cid, conn, stops[i])
            th = threading.Thread(target=serve, args=(conn, app), kwargs={"stop": stops[i], "wait": 0.2},
                                  daemon=True)
            th.start()
            threads.append(th)
        assert len(server.wait_for_clients(len(ids), timeout=10)) == len(ids)
        init = UserApp(spec.module_path(), framework="numpy", partitions=lambda _c: fed.partitions[0])
        driver = RoundDriver(strategy=build_strategy(spec), transport=server,
                             initial_params=init.init_arrays(spec.job.seed), config=driver_config(spec),
                             privacy=build_privacy(spec), noise_seed=noise_seed(spec), secure=build_secure(spec))
        return driver.run()
    finally:
        for stop in stops:
            stop.set()
        for th in threads:
            th.join(timeout=5)
        server.close()


def serve_tasks(port: int, name: str, stop: threading.Event, handle: Callable[[Any, Any], bool]) -> None:
    """A client thread's loop over a real GrpcConnector: pull tasks until ``stop`` is set and hand each
    to ``handle(conn, pulled)``, which returns False when this client is done (it answered, or died)."""
    from fedra.transport.grpc import GrpcConnector

    conn = GrpcConnector(f"127.0.0.1:{port}", client_id=name)
    try:
        while not stop.is_set():
            pulled = conn.pull(0.2)
            if pulled is not None and not handle(conn, pulled):
                return
    finally:
        conn.close()
