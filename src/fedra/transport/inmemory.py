"""An in-process transport backed by a function: the mock every driver test runs on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import final

from fedra.transport.base import Buffer, Reply, Task, TaskBatch, Transport

__all__ = ["FunctionTransport"]

#: ``handler(batch, task)`` returns the encoded reply, or raises to report the client's failure; the
#: task's payload is ``batch.payload_of(task)``.
Handler = Callable[[TaskBatch, Task], Buffer | None]


@final
class FunctionTransport(Transport):
    """Calls ``handler`` for each task, in task order, in this process.

    A handler that returns ``None`` models a client that never answers (a dropout); one that raises
    models a client reporting a failure, with the exception text as the reason.
    """

    def __init__(self, client_ids: Sequence[str], handler: Handler) -> None:
        self._clients = list(client_ids)
        self._handler = handler

    def clients(self) -> Sequence[str]:
        return list(self._clients)

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in batch.tasks:
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                payload = self._handler(batch, task)
            except Exception as exc:  # a client's failure is data, not our crash
                yield Reply(task.task_id, task.client_id, error=f"{type(exc).__name__}: {exc}")
                continue
            if payload is not None:
                yield Reply(task.task_id, task.client_id, payload=payload)
