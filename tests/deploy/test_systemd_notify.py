"""sd_notify against a real AF_UNIX datagram socket: readiness, status, and a watchdog that stops when the
main loop stops beating (a stalled loop must not be kept alive)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedra.deploy import Notifier, NotifyObserver, WatchedConnection
from fedra.runtime import RoundRecord, RunInfo


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(sock: socket.socket, timeout: float = 0.05) -> list[dict[str, str]]:
    """Every datagram waiting on ``sock``, parsed into KEY=VALUE dicts."""
    sock.settimeout(timeout)
    got: list[dict[str, str]] = []
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return got
        got.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    yield sock, path
    sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.send(READY=1) is False
    n.ready("x", within=1)
    n.close()


def test_ready_status_and_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier({"NOTIFY_SOCKET": path}) as n:
        n.ready("listening", within=10)
        n.status("round 3 of 5")
    got = messages(sock)
    assert got[0]["READY"] == "1" and got[0]["STATUS"] == "listening" and got[0]["MAINPID"] == str(os.getpid())
    assert got[1] == {"STATUS": "round 3 of 5"}
    assert got[-1] == {"STOPPING": "1"}


def test_abstract_namespace_socket() -> None:
    name = f"fedra-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.send(STATUS="hello")
        assert messages(sock) == [{"STATUS": "hello"}]


def test_pings_only_while_the_loop_keeps_its_promise(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = FakeClock()
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}, clock=clock)
    assert n.watchdog_interval == 30.0
    n.beat(10)
    assert n.ping()
    clock.now += 9.9
    assert n.ping()
    clock.now += 0.2  # the loop promised to beat within 10 s and did not: no more pings
    assert not n.ping()
    assert not n.ping()
    n.beat(5)  # it came back
    assert n.ping()
    assert [m for m in messages(sock) if "WATCHDOG" in m] == [{"WATCHDOG": "1"}] * 3


def test_watchdog_thread_stops_feeding_a_stalled_loop(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = FakeClock()
    # 20 ms watchdog: the thread pings every 10 ms of real time while the (fake-clock) promise holds
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"}, clock=clock)
    n.ready("up", within=60)
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"READY=1")
    assert sock.recv(4096) == b"WATCHDOG=1"  # fed while the loop is alive
    clock.now += 61  # the loop stalls past its promise
    messages(sock, timeout=0.1)  # drain pings sent before the thread noticed
    assert messages(sock, timeout=0.3) == []  # and then nothing: systemd's watchdog will fire
    n.beat(60)
    sock.settimeout(5)
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.close()
    assert {"STOPPING": "1"} in messages(sock)


def test_watchdog_pid_of_another_process_is_not_ours(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_interval is None


def test_default_environment_is_consumed(monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    n = Notifier()
    assert n.enabled and n.watchdog_interval == 1.0
    # a child (the training sandbox) must not speak for the service
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ


class FakeConnector:
    def __init__(self, results: list[object]) -> None:
        self.results = results
        self.closed = False

    def pull(self, wait: float) -> object:
        r = self.results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    def push(self, task: object, payload: object = None, *, error: str | None = None) -> str:
        return f"pushed {task}"

    def close(self) -> None:
        self.closed = True


def test_watched_connection_beats_on_every_pull_and_reports_reachability(
        listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = FakeClock()
    n = Notifier({"NOTIFY_SOCKET": path}, clock=clock)
    inner = FakeConnector([None, ConnectionError("down"), "task"])
    c = WatchedConnection(inner, n, within=100)
    assert c.pull(5) is None
    clock.now += 104
    assert n.alive()  # the pull renewed the promise: within + wait
    clock.now += 2
    assert not n.alive()
    with pytest.raises(ConnectionError):
        c.pull(5)
    assert n.alive()  # a failing pull is still a live loop (it retries)
    assert c.pull(5) == "task"
    assert c.push("t1") == "pushed t1"
    c.close()
    assert inner.closed
    assert [m["STATUS"] for m in messages(sock)] == [
        "connected to the server; serving tasks", "cannot reach the server; retrying",
        "connected to the server; serving tasks"]


def test_observer_beats_and_reports_rounds(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    clock = FakeClock()
    n = Notifier({"NOTIFY_SOCKET": path}, clock=clock)
    obs = NotifyObserver(n, within=50)
    obs.on_run_start(RunInfo(rounds=5, start_round=2, num_clients=3, num_parameters=10, model_bytes=40))
    clock.now += 49
    assert n.alive()
    clock.now += 2
    assert not n.alive()
    obs.on_round_end(RoundRecord(round=3, accepted=3, completed=True))
    assert n.alive()
    assert [m["STATUS"] for m in messages(sock)] == [
        "round 3 of 5 (resumed after round 2)", "round 3 of 5 done: 3 updates"]


def test_send_to_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.send(STATUS="x") is False


def test_concurrent_beats_are_safe(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    def beats() -> None:
        for _ in range(200):
            n.beat(1000)

    threads = [threading.Thread(target=beats) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert n.alive()
