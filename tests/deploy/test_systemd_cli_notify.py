"""``fedra server`` and ``fedra client`` speak sd_notify as real processes: READY once listening (or
serving), a STATUS per round, watchdog pings while the job runs, STOPPING at the end. The socket stands in
for systemd, so this runs wherever processes and Unix sockets do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("grpc")

FEDRA = str(Path(sys.executable).parent / "fedra")
TASK = Path(__file__).resolve().parents[1] / "simulation" / "softmax_task.py"
ROUNDS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Listener:
    """A datagram socket that collects every notification sent to it, from a thread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.got: list[dict[str, str]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self) -> list[dict[str, str]]:
        self.done.set()
        self.thread.join(timeout=5)
        self.sock.close()
        return self.got


@pytest.mark.slow
def test_server_and_client_notify_readiness_rounds_and_watchdog(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'''[job]
name = "notify"
module = "{TASK}"
framework = "numpy"
rounds = {ROUNDS}
[data]
dataset = "digits"
num_clients = 3
[strategy]
min_clients = 3
round_timeout = 60
''')
    port = free_port()
    server_sock, client_sock = Listener(tmp_path / "server.sock"), Listener(tmp_path / "client.sock")
    # 0.2 s watchdog: the processes ping every 0.1 s while their loops keep their promises
    notify = {"WATCHDOG_USEC": "200000", "FEDRA_TEST_SLOW": "0.3"}
    base = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(subprocess.Popen(
            [FEDRA, "server", str(job), "--bind", f"127.0.0.1:{port}", "--insecure", "--quiet",
             "--wait-clients", "60", "--run-dir", str(tmp_path / "run")],
            env={**base, **notify, "NOTIFY_SOCKET": str(server_sock.path)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for i in range(3):
            env = {**base, **notify, **({"NOTIFY_SOCKET": str(client_sock.path)} if i == 0 else {})}
            procs.append(subprocess.Popen(
                [FEDRA, "client", "--server", f"127.0.0.1:{port}", "--job", str(job), "--name", f"c{i}",
                 "--partition", str(i), "--insecure", "--sandbox", "off"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        server_msgs, client_msgs = server_sock.close(), client_sock.close()

    server_pid, client_pid = str(procs[0].pid), str(procs[1].pid)
    ready = [m for m in server_msgs if m.get("READY") == "1"]
    assert len(ready) == 1 and ready[0]["MAINPID"] == server_pid
    assert ready[0]["STATUS"].startswith(f"listening on 127.0.0.1:{port}")
    statuses = [m["STATUS"] for m in server_msgs if "STATUS" in m]
    for rnd in range(1, ROUNDS + 1):
        assert f"round {rnd} of {ROUNDS} done: 3 updates" in statuses, statuses
    assert any("WATCHDOG" in m for m in server_msgs), "the server never fed its watchdog"
    assert server_msgs[-1] == {"STOPPING": "1"}
    # the rounds' statuses come after READY: readiness means listening, before any round
    assert server_msgs.index(ready[0]) < server_msgs.index(
        next(m for m in server_msgs if m.get("STATUS", "").startswith("round 1 of")))

    assert next(m for m in client_msgs if m.get("READY") == "1")["MAINPID"] == client_pid
    assert {"STATUS": "connected to the server; serving tasks"} in client_msgs
    assert any("WATCHDOG" in m for m in client_msgs), "the client never fed its watchdog"
    assert client_msgs[-1] == {"STOPPING": "1"}
