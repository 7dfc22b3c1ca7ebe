"""The transport contract: the one thing the round driver knows about how clients are reached.

A transport lists the clients it can reach and runs one exchange: it delivers a :class:`TaskBatch` (one
payload shared by every task of the round, encoded once, plus a small header per client) and yields each
:class:`Reply` as it arrives, until every task has been answered or the timeout has passed. It never
decodes or judges a reply: validating what comes back is the driver's job, so every transport gets the
same checks.

Implementations: :class:`fedra.transport.inmemory.FunctionTransport` (a function per client, in-process:
tests and the mock), the process pool of :mod:`fedra.simulation`, and gRPC for deployments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["JobFinished", "Reply", "Task", "TaskBatch", "TaskKind", "Transport"]

from fedra.errors import TransportError

#: ``"secagg"``: one step of a secure aggregation round, each task with its own small payload
TaskKind = Literal["train", "evaluate", "secagg"]
Buffer = bytes | bytearray | memoryview


class JobFinished(TransportError):
    """The server says the job is over: a client's task loop ends normally."""

    exit_code = 0


@dataclass(frozen=True, slots=True)
class Task:
    """One client's share of a round: who, and the identifiers its reply must echo.

    ``payload``, when set, is sent to this client instead of the batch's shared payload: the steps of
    secure aggregation send each client its own messages (a few hundred bytes each).
    """

    task_id: str
    client_id: str
    nonce: str
    payload: Buffer | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TaskBatch:
    """The tasks of one exchange. ``payload`` is an encoded :class:`fedra.records.Message`, sent to every
    task that carries no payload of its own."""

    kind: TaskKind
    round: int
    payload: Buffer
    tasks: tuple[Task, ...]

    def payload_of(self, task: Task) -> Buffer:
        """What ``task``'s client is sent: its own payload, or the batch's shared one."""
        return self.payload if task.payload is None else task.payload


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back for one task: an encoded message, or the client's reason for failing."""

    task_id: str
    client_id: str
    payload: Buffer | None = None
    error: str | None = None
    #: called by the driver with ``None`` (taken) or the reason it was refused; a transport that can
    #: answer the client (gRPC) passes it back to them.
    ack: Callable[[str | None], None] | None = field(default=None, compare=False)


class Transport(ABC):
    """Reaches clients. One exchange at a time; implementations need not be thread-safe."""

    @abstractmethod
    def clients(self) -> Sequence[str]:
        """Identifiers of the clients that can take a task now."""

    @abstractmethod
    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        """Deliver ``batch`` and yield replies as they arrive.

        The iterator ends when every task has a reply or ``timeout`` seconds have passed. A client that
        cannot be reached or fails yields a :class:`Reply` with ``error`` set, when the transport knows;
        a client that says nothing simply yields nothing. Replies that arrive after the iterator ended
        are the transport's to discard.
        """

    def late_replies(self) -> int:
        """Replies discarded so far because their round had closed (stragglers), where the transport can
        tell; the driver records how many came during each round. The default counts none."""
        return 0

    @property
    def reorder_window(self) -> int | None:
        """How many replies a consumer may keep alive while it waits for an earlier task's reply (to fold
        in task order) without holding up this transport; ``None``: any number (the default).

        A transport that bounds the replies alive at once (gRPC) admits no more once its slots are full;
        if the consumer kept every reply that came ahead of a task whose client never answers (it died
        after its download, or straggles past the deadline), every later reply would wait for a slot until
        the round closed, and be lost.
        """
        return None

    def wait_for_clients(self, n: int, *, timeout: float) -> Sequence[str]:
        """Clients available once at least ``n`` are, or when ``timeout`` has passed.

        Transports whose clients come and go (gRPC) wait; the default answers at once.
        """
        return self.clients()

    def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release connections and processes."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
