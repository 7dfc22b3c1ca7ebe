"""A networked client's task loop: pull a task, run it, push the reply; reconnect with backoff.

Transport-agnostic: it drives any :class:`Connector` (the gRPC one lives in ``fedra.transport.grpc``).
A failure of the user's code is reported to the server as that task's error and the loop goes on; a
failure to reach the server is retried with capped exponential backoff and jitter. Tasks run in this
process on a :class:`ClientApp`, or wherever a :class:`TaskRunner` runs them (a sandboxed worker).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from fedra.errors import FedraError, RecordError, TransportError
from fedra.records import Message, decode_message
from fedra.runtime._client import ClientApp, RoundPayload, run_task
from fedra.runtime._sandboxed import TaskFailed, TaskRunner
from fedra.transport.base import Buffer, JobFinished, Task

if TYPE_CHECKING:  # loads cryptography: imported when a secure round first needs it
    from fedra.runtime._secure import SecureClient

__all__ = ["Connector", "PulledTaskLike", "serve"]

log = logging.getLogger("fedra.client")


class PulledTaskLike(Protocol):
    @property
    def task(self) -> Task: ...

    @property
    def payload(self) -> Buffer: ...


class Connector(Protocol):
    def pull(self, wait: float) -> PulledTaskLike | None: ...

    def push(self, task: Task, payload: Buffer | None = None, *, error: str | None = None) -> Any: ...


#: the task config key that asks for secure aggregation (fedra.runtime._secure.SECAGG_CONFIG)
_SECAGG = "secagg"


def _peek(payload: Buffer) -> Message | None:
    """The task's envelope (views: no copy, no pass over the values), or None when it does not decode:
    then whoever runs the task reports what is wrong with it, as before secure aggregation existed."""
    try:
        return decode_message(payload, what="task")
    except RecordError:
        return None


def _secure_client() -> SecureClient:
    from fedra.runtime._secure import SECAGG_CONFIG, SecureClient

    assert SECAGG_CONFIG == _SECAGG
    return SecureClient()


def serve(connector: Connector, app: ClientApp | TaskRunner, *, stop: threading.Event | None = None, wait: float = 5.0,
          max_backoff: float = 30.0, max_tasks: int | None = None,
          sleep: Callable[[float], bool] | None = None, secure: SecureClient | None = None) -> int:
    """Serve tasks until ``stop`` is set (or ``max_tasks`` were done); returns the number of tasks done.

    ``app`` runs each task: a :class:`ClientApp` in this process, or a :class:`TaskRunner` (e.g. a
    :class:`SandboxedRunner`), whose :class:`TaskFailed` reasons are reported to the server as they are.
    Secure aggregation's steps run here, in the process that holds the connection, never in the
    sandbox: a training task whose config asks for it has its reply (the trained model) turned into the
    protocol's first message by ``secure``, which keeps the update for the ``secagg`` tasks that follow.
    """
    stop = stop or threading.Event()
    pause = sleep or stop.wait
    done = 0
    failures = 0
    while not stop.is_set() and (max_tasks is None or done < max_tasks):
        try:
            pulled = connector.pull(wait)
        except JobFinished:
            log.info("the server says the job is finished")
            break
        except TransportError as exc:
            failures += 1
            delay = min(max_backoff, 0.1 * 2 ** min(failures, 10)) * (0.5 + random.random() / 2)
            log.warning("cannot reach the server (%s); retrying in %.1f s", exc, delay)
            pause(delay)
            continue
        failures = 0
        if pulled is None:
            continue
        task = pulled.task
        error: str | None
        reply: Buffer | None
        try:
            head = _peek(pulled.payload)
            if head is not None and head.meta.get("kind") == "secagg":
                secure = secure or _secure_client()
                reply = secure.step(pulled.payload, task)
            else:
                if isinstance(app, TaskRunner):
                    reply = app.run_task(pulled.payload, task)
                else:
                    reply = run_task(app, RoundPayload.decode(pulled.payload), task)
                rnd = None if head is None else head.meta.get("round")
                if (head is not None and head.meta.get("kind") == "train" and _SECAGG in head.config
                        and isinstance(rnd, int)):
                    secure = secure or _secure_client()
                    reply = secure.start(head, task, reply, round=rnd)
        except TaskFailed as exc:
            error, reply = str(exc), None
        except FedraError as exc:
            error = f"{type(exc).__name__}: {exc}"
            reply = None
        except Exception as exc:  # the user's code failed: report it, keep serving
            error, reply = f"{type(exc).__name__}: {exc}", None
        else:
            error = None
        try:
            ack = connector.push(task, reply, error=error)
        except TransportError as exc:
            log.warning("reply to task %s was not delivered: %s", task.task_id, exc)
            continue
        if getattr(ack, "received", True) is False:
            log.warning("server did not take the reply to task %s: %s", task.task_id, getattr(ack, "reason", ""))
        done += 1
    return done
