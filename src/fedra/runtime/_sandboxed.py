"""Training in a sandbox: one warm worker per client, fed tasks over a Unix socket, restarted when it dies.

The client process holds the server connection; the worker (in a :class:`fedra.linux.SandboxProcess`)
holds the user's module, the model and the partition, loaded once, and has no network. Per task the
parent sends the round's payload and gets the encoded reply back: a few copies of the model through a
socket, no process start (a warm worker is what keeps sandboxing cheap per task).

Wire format (both directions; nothing is pickled): a 12-byte prefix (``<QI``: body length, header
length), a JSON header, then a raw body, which is a fedra payload (safetensors layout) or empty.

==========  =========================  ==========================================
from        header ``op``              body
==========  =========================  ==========================================
worker      ``ready``                  (after loading the app; once)
parent      ``task`` (+ task fields)   the round's payload
worker      ``reply``                  the encoded reply
worker      ``failed`` (+ ``error``)   (the user's code raised; the worker goes on)
==========  =========================  ==========================================

When the worker dies during a task, the task fails with the reason: ``out of memory (limit N MiB)``
when the sandbox's memory cgroup counted an OOM kill, else how the process ended. A task that takes
longer than ``task_timeout`` (an endless loop, a deadlock) fails with ``task timed out after N s`` and
its worker is killed. Either way the next task starts a fresh worker. A worker that cannot load the
user's module says why (``failed``) and the runner raises :class:`~fedra.errors.UserCodeError`.

The runner makes one cgroup for all the workers it starts in turn (emptied when one dies, removed at
:meth:`SandboxedRunner.close`): its limits hold for each, and with ``label=True`` its cgroup v2 id
(:attr:`SandboxedRunner.cgroup_id`) stays the same, so a traffic monitor started once keeps watching.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, final, runtime_checkable

from fedra.errors import FedraError, UserCodeError
from fedra.linux import (
    SANDBOX_FD_ENV,
    Cgroup,
    SandboxConfig,
    SandboxProcess,
    install_seccomp_filter,
)
from fedra.records import DEFAULT_MAX_PAYLOAD_BYTES
from fedra.runtime._client import ClientApp, RoundPayload, run_task
from fedra.transport.base import Buffer, Task

__all__ = ["SandboxedRunner", "TaskFailed", "TaskRunner", "serve_in_sandbox"]

log = logging.getLogger("fedra.client")

_PREFIX = struct.Struct("<QI")
_MAX_HEADER = 1 << 20


class TaskFailed(FedraError):
    """One task failed; the message is the reason, reported to the server as it is."""


@runtime_checkable
class TaskRunner(Protocol):
    """Runs a task from its raw payload to its encoded reply, wherever (a sandbox, this process)."""

    def run_task(self, payload: Buffer, task: Task) -> Buffer: ...


def _until(sock: socket.socket, deadline: float | None) -> None:
    """Make the socket's next call give up at ``deadline`` (a ``time.monotonic()``), if one is set."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the deadline passed")
        sock.settimeout(left)


def _send(sock: socket.socket, header: dict[str, Any], body: Buffer | None = None, *,
          deadline: float | None = None) -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    size = memoryview(body).nbytes if body is not None else 0
    _until(sock, deadline)
    sock.sendall(_PREFIX.pack(size, len(head)) + head)
    if size:
        _until(sock, deadline)  # sendall's timeout bounds the whole call (Python >= 3.5)
        sock.sendall(memoryview(body).cast("B"))  # type: ignore[arg-type]  # body is set when size > 0


def _recv_exactly(sock: socket.socket, n: int, deadline: float | None = None) -> bytearray | None:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        _until(sock, deadline)
        k = sock.recv_into(view[got:])
        if k == 0:
            return None  # the other side closed (or died)
        got += k
    return buf


def _recv(sock: socket.socket, max_body: int, *,
          deadline: float | None = None) -> tuple[dict[str, Any], bytearray] | None:
    """One message, or ``None`` when the peer closed the socket; ``TimeoutError`` past ``deadline``."""
    prefix = _recv_exactly(sock, _PREFIX.size, deadline)
    if prefix is None:
        return None
    size, hlen = _PREFIX.unpack(prefix)
    if hlen > _MAX_HEADER or size > max_body:
        raise ConnectionError(f"sandbox message too large: header {hlen:,} bytes (at most {_MAX_HEADER:,}), "
                              f"body {size:,} bytes (at most {max_body:,})")
    head = _recv_exactly(sock, hlen, deadline)
    body = _recv_exactly(sock, size, deadline) if size else bytearray()
    if head is None or body is None:
        return None
    header = json.loads(head)
    if not isinstance(header, dict):
        raise ConnectionError("sandbox message: expected a JSON object header")
    return header, body


def _how_it_ended(status: int | None) -> str:
    if status is None:
        return "it did not exit"
    if status > 128 and status - 128 < signal.NSIG:  # bubblewrap reports a signal as 128 + its number
        return f"killed by {signal.Signals(status - 128).name}"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


@final
class SandboxedRunner:
    """The parent's side: runs tasks on a warm sandboxed worker and restarts it when it dies.

    Parameters
    ----------
    command
        The worker's command line; it must end up calling :func:`serve_in_sandbox`.
    config
        The sandbox: work directory, read-only paths (module, data), limits.
    max_payload_bytes
        The largest reply accepted from the worker.
    ready_timeout
        Seconds a starting worker may take to load the app and say it is ready.
    task_timeout
        Seconds one task may take, from handing it over to its reply (``None``: no limit). Past it the
        worker is killed and the task fails with ``task timed out after N s``.
    label
        Also put the workers in a cgroup v2 group of their own (see :class:`fedra.linux.Cgroup`), whose
        id, :attr:`cgroup_id`, a traffic monitor can watch. Best effort: where it cannot be made, a
        warning says why and the workers run unlabelled.
    """

    def __init__(self, command: Sequence[str], config: SandboxConfig, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, ready_timeout: float = 300.0,
                 task_timeout: float | None = None, label: bool = False) -> None:
        if task_timeout is not None and not task_timeout > 0:
            raise ValueError(f"task_timeout: expected a positive number of seconds or None, got {task_timeout}")
        self.command = list(command)
        self.config = config
        self.max_payload_bytes = max_payload_bytes
        self.ready_timeout = ready_timeout
        self.task_timeout = task_timeout
        self.label = label
        #: how many workers were started (1 after the first start; each death and restart adds one)
        self.starts = 0
        self._proc: SandboxProcess | None = None
        self._worker_pid: int | None = None
        self._cgroup: Cgroup | None = None

    @property
    def worker_pid(self) -> int | None:
        """The worker's pid inside its sandbox (as the worker sees it), while one is running."""
        return self._worker_pid if self._proc is not None else None

    @property
    def sandbox(self) -> SandboxProcess | None:
        """The running sandbox, if any."""
        return self._proc

    @property
    def cgroup(self) -> Cgroup | None:
        """The cgroup every worker of this runner runs in (made by the first :meth:`start`), if any."""
        return self._cgroup

    @property
    def cgroup_id(self) -> int | None:
        """The cgroup v2 id of the workers' label group (with ``label=True``, after :meth:`start`)."""
        return self._cgroup.cgroup_id if self._cgroup is not None else None

    def _make_cgroup(self) -> None:
        limits = self.config.limits
        if self._cgroup is not None or not (limits.controllers or self.label):
            return
        if self.label:
            try:
                self._cgroup = Cgroup.create(limits, label=True)
                return
            except FedraError as exc:
                log.warning("the sandbox's processes cannot be labelled for the traffic monitor (%s); "
                            "it will not see their network attempts", exc)
                self.label = False
        if limits.controllers:
            self._cgroup = Cgroup.create(limits)

    def start(self) -> None:
        """Start a worker (if none runs) and wait until it has loaded the app.

        Raises
        ------
        TaskFailed
            The worker could not start; the message says why.
        UserCodeError
            The worker started but could not load the user's module (or data): the message is its error.
        """
        if self._proc is not None:
            return
        self.starts += 1
        try:
            self._make_cgroup()
            proc = SandboxProcess.start(self.command, self.config, cgroup=self._cgroup)
        except FedraError as exc:
            raise TaskFailed(f"sandbox: {exc}") from exc
        try:
            proc.sock.settimeout(self.ready_timeout)
            msg = _recv(proc.sock, 0)
            proc.sock.settimeout(None)
        except (OSError, ValueError) as exc:
            proc.close(timeout=0)
            raise TaskFailed(f"sandbox: the worker did not start: {exc}") from exc
        if msg is None or msg[0].get("op") != "ready":
            error = str(msg[0].get("error", "")) if msg is not None else ""
            status = proc.wait(5.0)
            proc.close(timeout=0)
            if error:  # the worker is fine; what it was asked to load is not
                raise UserCodeError(f"the sandboxed worker could not load the app: {error}")
            raise TaskFailed(f"sandbox: the worker did not start ({_how_it_ended(status)})")
        self._proc = proc
        self._worker_pid = msg[0].get("pid")

    def run_task(self, payload: Buffer, task: Task) -> Buffer:
        """Run one task in the sandbox and return the encoded reply.

        Raises
        ------
        TaskFailed
            The user's code raised (message ``Type: text``), the worker ran out of memory (message
            ``out of memory (limit N MiB)``), took longer than ``task_timeout`` (``task timed out after
            N s``) or died otherwise; the next call starts a new worker.
        UserCodeError
            A new worker could not load the user's module.
        """
        self.start()
        proc = self._proc
        assert proc is not None
        deadline = None if self.task_timeout is None else time.monotonic() + self.task_timeout
        try:
            _send(proc.sock, {"op": "task", "task_id": task.task_id, "client_id": task.client_id,
                              "nonce": task.nonce}, payload, deadline=deadline)
            msg = _recv(proc.sock, self.max_payload_bytes, deadline=deadline)
        except TimeoutError:
            raise self._timed_out() from None
        except (OSError, ValueError) as exc:
            log.debug("sandbox socket failed: %s", exc)
            msg = None
        finally:
            if self._proc is not None:
                with contextlib.suppress(OSError):
                    proc.sock.settimeout(None)
        if msg is None:
            raise self._died()
        header, body = msg
        if header.get("op") == "reply":
            return body
        raise TaskFailed(str(header.get("error", "the sandboxed worker failed without a reason")))

    def _timed_out(self) -> TaskFailed:
        proc, self._proc = self._proc, None
        assert proc is not None
        proc.close(timeout=0)  # the socket is mid-message now: only a new worker can be trusted
        reason = f"task timed out after {self.task_timeout:g} s"
        log.warning("%s; its worker was killed and a new one will take the next task", reason)
        return TaskFailed(reason)

    def _died(self) -> TaskFailed:
        proc, self._proc = self._proc, None
        assert proc is not None
        status = proc.wait(5.0)
        oom = proc.oom_killed()
        proc.close(timeout=0)
        limit = self.config.limits.memory_mib
        if oom and limit is not None:
            reason = f"out of memory (limit {limit} MiB)"
        else:
            reason = f"the sandboxed worker died ({_how_it_ended(status)})"
        log.warning("%s; a new worker will take the next task", reason)
        return TaskFailed(reason)

    def close(self) -> None:
        """Stop the worker and remove its sandbox and cgroup (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()
        group, self._cgroup = self._cgroup, None
        if group is not None:
            group.close()

    def __enter__(self) -> SandboxedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_in_sandbox(make_app: Callable[[], ClientApp]) -> int:
    """The worker's side, run inside the sandbox: serve tasks over the parent's socket until it closes.

    Installs the seccomp filter first, then builds the app (so the user's module is imported under the
    filter), says ``ready``, and runs each task with :func:`fedra.runtime.run_task`. Returns the exit status.
    """
    sock = socket.socket(fileno=int(os.environ[SANDBOX_FD_ENV]))
    install_seccomp_filter()
    try:
        app = make_app()
    except Exception as exc:
        _send(sock, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return 70
    _send(sock, {"op": "ready", "pid": os.getpid()})
    while True:
        msg = _recv(sock, DEFAULT_MAX_PAYLOAD_BYTES)
        if msg is None:
            return 0
        header, body = msg
        task = Task(task_id=str(header["task_id"]), client_id=str(header["client_id"]),
                    nonce=str(header["nonce"]))
        try:
            reply = run_task(app, RoundPayload.decode(body), task)
        except Exception as exc:  # the user's code failed: report it, keep serving
            _send(sock, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        else:
            _send(sock, {"op": "reply"}, reply)
