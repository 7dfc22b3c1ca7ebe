"""The client loop with a task runner (no sandbox needed): a runner's failure reason reaches the server
word for word and the loop takes the next task; the sandbox's framing refuses oversized messages."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

import pytest

from fedra.runtime import TaskFailed, serve
from fedra.runtime._sandboxed import _recv, _send
from fedra.transport.base import Buffer, Task


@dataclass
class _Pulled:
    task: Task
    payload: Buffer


class _Connector:
    def __init__(self, n: int) -> None:
        self.tasks = [_Pulled(Task(f"t{i}", "c0", f"n{i}"), b"payload") for i in range(n)]
        self.pushed: list[tuple[str, bytes | None, str | None]] = []

    def pull(self, wait: float) -> _Pulled | None:
        return self.tasks.pop(0) if self.tasks else None

    def push(self, task: Task, payload: Buffer | None = None, *, error: str | None = None) -> Any:
        self.pushed.append((task.task_id, None if payload is None else bytes(payload), error))
        return None


class _Runner:
    """Fails the second task as an OOM-killed sandbox would."""

    def __init__(self) -> None:
        self.calls = 0

    def run_task(self, payload: Buffer, task: Task) -> bytearray:
        self.calls += 1
        if self.calls == 2:
            raise TaskFailed("out of memory (limit 64 MiB)")
        return bytearray(b"reply-" + task.task_id.encode())


def test_a_runner_failure_is_pushed_as_that_tasks_exact_error_and_serving_goes_on() -> None:
    connector = _Connector(3)
    done = serve(connector, _Runner(), max_tasks=3)
    assert done == 3
    assert connector.pushed == [("t0", b"reply-t0", None), ("t1", None, "out of memory (limit 64 MiB)"),
                                ("t2", b"reply-t2", None)]


def test_framing_round_trips_and_refuses_oversized_messages() -> None:
    a, b = socket.socketpair()
    with a, b:
        _send(a, {"op": "reply", "n": 1}, memoryview(b"x" * 1000))
        header, body = _recv(b, 1000) or ({}, bytearray())
        assert header == {"op": "reply", "n": 1} and body == b"x" * 1000
        a.sendall(struct.pack("<QI", 1 << 40, 2) + b"{}")  # a worker announcing a terabyte
        with pytest.raises(ConnectionError, match="too large"):
            _recv(b, 1 << 20)
        a.close()
        assert _recv(b, 10) is None  # the peer is gone
