"""A transport whose clients are virtual: tasks run on a pool of resident worker processes.

Each worker is forked once. It loads the user's module, builds the model once and keeps recently used
partitions prepared, so a task costs only the training itself. The main process never imports the
model framework: even the initial model and the centralised evaluation come from a worker.

Wire format between processes (``Connection.send_bytes``; nothing is pickled): one message is a 4-byte
header length, a JSON header and a raw body. Bodies are fedra payloads (safetensors layout); a worker's
replies to a chunk of tasks travel together, their bodies concatenated, with their lengths in the header.

Tasks are handed out in chunks, a few per worker at a time, to whichever worker asks for more; which
worker runs a task never changes its result (each task is seeded from the round seed and the client id,
and starts from the global model), so the simulation stays deterministic under any scheduling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import signal
import struct
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol, final

import numpy as np

from fedra.errors import FedraError, TransportError, UserCodeError
from fedra.records import Message, decode_message, empty_buffer, encode_message
from fedra.runtime import ClientApp, RoundPayload, run_task
from fedra.transport.base import Buffer, Reply, Task, TaskBatch, Transport

__all__ = ["ProcessPoolTransport", "WorkerApp"]

log = logging.getLogger("fedra.simulation")


class WorkerApp(ClientApp, Protocol):
    """A client app that can also initialise the model and evaluate it on held-out data."""

    def init_arrays(self, seed: int) -> dict[str, np.ndarray]: ...

    def evaluate_central(self, config: Mapping[str, Any], seed: int) -> dict[str, Any]: ...


AppFactory = Callable[[], WorkerApp]


_HLEN = struct.Struct("<I")
#: A worker sends its replies in one message per this many bytes (or per chunk of tasks, if sooner).
_FLUSH_BYTES = 1 << 20


def _send(conn: Connection, header: dict[str, Any], body: Buffer | None = None) -> None:
    """One pipe message: a 4-byte header length, the JSON header, then the raw body (if any)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    if body is None:
        conn.send_bytes(_HLEN.pack(len(head)) + head)
        return
    # every byte is written below: no zero-fill pass as bytearray's (see encode_arrays)
    buf = empty_buffer(_HLEN.size + len(head) + memoryview(body).nbytes).data
    _HLEN.pack_into(buf, 0, len(head))
    buf[_HLEN.size:_HLEN.size + len(head)] = head
    buf[_HLEN.size + len(head):] = memoryview(body).cast("B")
    conn.send_bytes(buf)


def _recv(conn: Connection) -> tuple[dict[str, Any], memoryview]:
    data = memoryview(conn.recv_bytes())
    (hlen,) = _HLEN.unpack_from(data, 0)
    end = _HLEN.size + hlen
    return json.loads(bytes(data[_HLEN.size:end])), data[end:]


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, FedraError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _worker_main(conn: Connection, factory: AppFactory) -> None:
    """The worker loop. Every failure of user code becomes an error reply; the worker itself lives on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    try:
        app = factory()
    except BaseException as exc:
        _send(conn, {"cmd": "failed", "error": _error_text(exc), "user_code": isinstance(exc, UserCodeError)})
        return
    _send(conn, {"cmd": "ready", "pid": os.getpid()})
    current: RoundPayload | None = None
    while True:
        try:
            header, body = _recv(conn)
        except (EOFError, OSError):
            return
        cmd = header["cmd"]
        if cmd == "stop":
            return
        if cmd == "round":
            try:
                current = RoundPayload.decode(body)
            except FedraError as exc:
                current = None
                log.error("worker: cannot decode round payload: %s", exc)
        elif cmd == "tasks":
            # Replies go back batched (one message per chunk, or per MiB): fewer system calls per task.
            items: list[dict[str, Any]] = []
            bodies: list[Buffer] = []
            size = 0
            for task_id, client_id, nonce in header["tasks"]:
                item: dict[str, Any] = {"task_id": task_id, "client_id": client_id, "n": 0}
                try:
                    if current is None or current.round != header["round"]:
                        raise TransportError(f"no payload for round {header['round']}")
                    out = run_task(app, current, Task(task_id, client_id, nonce))
                except Exception as exc:
                    item["error"] = _error_text(exc)
                else:
                    item["n"] = len(out)
                    bodies.append(out)
                    size += len(out)
                items.append(item)
                if size >= _FLUSH_BYTES:
                    _send(conn, {"cmd": "replies", "round": header["round"], "items": items}, b"".join(bodies))
                    items, bodies, size = [], [], 0
            if items:
                _send(conn, {"cmd": "replies", "round": header["round"], "items": items}, b"".join(bodies))
        elif cmd == "init":
            try:
                arrays = app.init_arrays(int(header["seed"]))
                _send(conn, {"cmd": "init"}, encode_message(Message(arrays=arrays)))
            except Exception as exc:
                _send(conn, {"cmd": "init", "error": _error_text(exc)})
        elif cmd == "evaluate":
            try:
                app.set_arrays(decode_message(body).arrays)
                metrics = app.evaluate_central(header.get("config", {}), int(header["seed"]))
                _send(conn, {"cmd": "evaluate", "metrics": metrics})
            except Exception as exc:
                _send(conn, {"cmd": "evaluate", "error": _error_text(exc)})


@final
class _Worker:
    __slots__ = ("conn", "outstanding", "process")

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.outstanding: dict[str, Task] = {}


@final
class ProcessPoolTransport(Transport):
    """Virtual clients ``client_ids`` served by ``num_workers`` forked worker processes."""

    def __init__(self, client_ids: Sequence[str], factory: AppFactory, *, num_workers: int = 0,
                 start_timeout: float = 120.0) -> None:
        self._clients = list(client_ids)
        self._index = {c: i for i, c in enumerate(self._clients)}
        self._factory = factory
        self._n = num_workers or (os.cpu_count() or 1)
        self._ctx = mp.get_context("fork")
        self._workers: list[_Worker] = []
        self._start_timeout = start_timeout

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ProcessPoolTransport:
        procs = [self._spawn() for _ in range(self._n)]
        for w in procs:
            self._await_ready(w)
        self._workers = procs
        return self

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self._factory), daemon=True,
                                 name="fedra-worker")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _await_ready(self, w: _Worker) -> None:
        if not w.conn.poll(self._start_timeout):
            raise TransportError(f"simulation worker did not start within {self._start_timeout:.0f} s")
        try:
            header, _ = _recv(w.conn)
        except EOFError:
            raise TransportError(f"simulation worker exited during start-up (exit code "
                                 f"{w.process.exitcode})") from None
        if header["cmd"] != "ready":
            if header.get("user_code"):
                raise UserCodeError(f"the model module failed to load in a worker: {header.get('error')}")
            raise TransportError(f"simulation worker failed to start: {header.get('error')}")

    def close(self) -> None:
        for w in self._workers:
            with contextlib.suppress(OSError):
                _send(w.conn, {"cmd": "stop"})
        for w in self._workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self._workers = []

    def __enter__(self) -> ProcessPoolTransport:
        return self.start() if not self._workers else self

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    # -- requests to one worker ------------------------------------------------------------------
    def _request(self, header: dict[str, Any], body: Buffer | None = None) -> tuple[dict[str, Any], memoryview]:
        w = self._idle_worker()
        _send(w.conn, header, body)
        while True:
            try:
                reply, rbody = _recv(w.conn)
            except EOFError:
                self._replace(w)
                raise TransportError(f"simulation worker died during {header['cmd']!r}") from None
            if reply["cmd"] == header["cmd"]:
                if "error" in reply:
                    raise TransportError(f"{header['cmd']} failed in a worker: {reply['error']}")
                return reply, rbody
            self._absorb(w, reply)  # a straggling reply from an earlier round

    def _idle_worker(self) -> _Worker:
        if not self._workers:
            raise TransportError("the simulation pool is not started; use it as a context manager")
        return min(self._workers, key=lambda w: len(w.outstanding))

    def initial_arrays(self, seed: int) -> dict[str, np.ndarray]:
        """The initial global model, built by the user's ``model()`` in a worker."""
        _, body = self._request({"cmd": "init", "seed": seed})
        return {k: np.array(v) for k, v in decode_message(body).arrays.items()}

    def evaluate_central(self, params: Mapping[str, np.ndarray], *, seed: int = 0,
                         config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Evaluate ``params`` on the held-out test set, in a worker."""
        reply, _ = self._request({"cmd": "evaluate", "seed": seed, "config": dict(config or {})},
                                 encode_message(Message(arrays=params)))
        return {k: float(v) for k, v in reply["metrics"].items() if isinstance(v, int | float)}

    # -- the transport contract ------------------------------------------------------------------
    def clients(self) -> Sequence[str]:
        return list(self._clients)

    def _home(self, client_id: str, num_workers: int) -> int:
        i = self._index.get(client_id)
        return (i if i is not None else zlib.crc32(client_id.encode())) % num_workers

    def _absorb(self, w: _Worker, header: dict[str, Any]) -> None:
        if header.get("cmd") == "replies":
            for item in header["items"]:
                w.outstanding.pop(item["task_id"], None)

    def _replace(self, w: _Worker) -> tuple[list[Task], _Worker]:
        lost = list(w.outstanding.values())
        w.process.join(timeout=1)
        code = w.process.exitcode
        log.warning("simulation worker %s exited (code %s) with %d tasks in flight; starting a new one",
                    w.process.pid, code, len(lost))
        w.conn.close()
        new = self._spawn()
        self._await_ready(new)
        self._workers[self._workers.index(w)] = new
        return lost, new

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        if not self._workers:
            raise TransportError("the simulation pool is not started; use it as a context manager")
        deadline = None if timeout is None else time.monotonic() + timeout
        # Each client has a home worker, so its prepared partition stays cached there; a worker whose own
        # queue is empty steals from the longest other queue, so no worker idles while work remains.
        nw = len(self._workers)
        queues: list[deque[Task]] = [deque() for _ in range(nw)]
        for t in batch.tasks:
            queues[self._home(t.client_id, nw)].append(t)
        n = len(batch.tasks)
        chunk = max(1, min(64, -(-n // (nw * 4))))
        for w in self._workers:
            with contextlib.suppress(OSError):  # a dead worker shows up as EOF in the loop below
                _send(w.conn, {"cmd": "round", "round": batch.round}, batch.payload)
        pending = n
        ids = {t.task_id for t in batch.tasks}

        # Tasks that were in flight at a worker that died run again one at a time, alone on a worker,
        # so that a task which kills its worker is identified exactly and reported as that client's failure.
        suspects: deque[Task] = deque()
        isolated: set[str] = set()

        def feed(w: _Worker) -> None:
            # keep at most two chunks queued at a worker: enough to hide latency, little to strand
            own = queues[self._workers.index(w)]
            while len(w.outstanding) < 2 * chunk:
                if isolated and not isolated.isdisjoint(w.outstanding):
                    return  # a suspect runs alone
                if suspects:
                    if w.outstanding:
                        return
                    part = [suspects.popleft()]
                else:
                    q = own if own else max(queues, key=len)
                    if not q:
                        return
                    take = min(chunk, len(q))
                    part = [q.popleft() for _ in range(take)] if q is own else [q.pop() for _ in range(take)]
                for t in part:
                    w.outstanding[t.task_id] = t
                try:
                    _send(w.conn, {"cmd": "tasks", "round": batch.round,
                                   "tasks": [[t.task_id, t.client_id, t.nonce] for t in part]})
                except OSError:
                    return  # the worker died: its EOF is handled below, with these tasks in flight

        for w in self._workers:
            feed(w)
        by_conn = {id(w.conn): w for w in self._workers}
        while pending:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            ready = wait([w.conn for w in self._workers], timeout=remaining)
            for conn in ready:
                w = by_conn[id(conn)]
                try:
                    header, body = _recv(w.conn)
                except (EOFError, OSError):
                    lost, new = self._replace(w)
                    by_conn = {id(x.conn): x for x in self._workers}
                    _send(new.conn, {"cmd": "round", "round": batch.round}, batch.payload)
                    mine = [t for t in lost if t.task_id in ids]
                    if len(mine) == 1 and mine[0].task_id in isolated:
                        pending -= 1
                        yield Reply(mine[0].task_id, mine[0].client_id,
                                    error=f"worker process died during the task (exit code {w.process.exitcode})")
                    else:
                        suspects.extend(mine)
                        isolated.update(t.task_id for t in mine)
                    for x in self._workers:
                        feed(x)
                    continue
                if header.get("cmd") != "replies":
                    continue
                pos = 0
                for item in header["items"]:
                    n = item["n"]
                    payload, pos = (body[pos:pos + n] if n else None), pos + n
                    task = w.outstanding.pop(item["task_id"], None)
                    if header["round"] != batch.round or task is None:
                        continue  # a straggler from an earlier exchange: the driver already moved on
                    pending -= 1
                    yield Reply(task.task_id, task.client_id, payload=payload, error=item.get("error"))
                feed(w)
