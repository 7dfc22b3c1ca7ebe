"""The server side of the gRPC transport: clients pull tasks and push replies; the driver sees a Transport.

Every client call has a deadline; every stream is chunked (see :mod:`._chunks`); message sizes and
keepalive are set explicitly below. Replies are handed to the driver as they complete, and the driver
validates them (task, client, nonce, schema, finiteness), exactly as for the simulation.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import grpc

from fedra.errors import AccessDenied, ConfigError, RecordError, TransportError
from fedra.records import DEFAULT_MAX_PAYLOAD_BYTES
from fedra.transport.base import Reply, Task, TaskBatch, Transport
from fedra.transport.grpc import fedra_pb2 as pb
from fedra.transport.grpc import fedra_pb2_grpc as rpc
from fedra.transport.grpc._chunks import CHUNK_SIZE, Assembler, chunks

if TYPE_CHECKING:
    from fedra.pki import Authority

__all__ = ["CHANNEL_OPTIONS", "GrpcTransport"]

log = logging.getLogger("fedra.transport.grpc")

#: Explicit limits and keepalive, shared by server and client. Messages are one chunk plus a header, so
#: 8 MiB leaves room; keepalive pings every 30 s detect a dead peer behind a NAT that drops idle flows.
CHANNEL_OPTIONS: Final[list[tuple[str, Any]]] = [
    ("grpc.max_send_message_length", 4 * CHUNK_SIZE),
    ("grpc.max_receive_message_length", 4 * CHUNK_SIZE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


@dataclass(slots=True)
class _Client:
    mailbox: queue.Queue[tuple[TaskBatch, Task] | None]  # None: the job is finished
    last_seen: float
    polling: int = 0
    told: bool = False  # has been told the job is finished


@final
class _Servicer(rpc.FederationServicer):
    def __init__(self, transport: GrpcTransport) -> None:
        self.t = transport

    def _identity(self, claimed: str, context: grpc.ServicerContext) -> str:
        """The caller's name: its certificate's under TLS (the claimed id is ignored), else the claim."""
        if self.t.secure:
            auth = context.auth_context()
            if self.t.authority is not None:
                pems = auth.get("x509_pem_cert") or []
                if not pems:
                    log.warning("client at %s refused: no client certificate", context.peer())
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "expected a client certificate, got none")
                try:
                    return self.t.authority.check_peer(pems[0])
                except AccessDenied as exc:  # fedra.pki.PeerRejected: carries .name and .reason
                    name, reason = getattr(exc, "name", None), str(getattr(exc, "reason", "denied"))
                    log.warning("client %r at %s refused (%s): %s", name, context.peer(), reason, exc)
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{reason}: {exc}")
                    raise AssertionError("unreachable: abort raises") from exc
            names = auth.get("x509_common_name") or []
            if not names:
                log.warning("client at %s refused: no client certificate", context.peer())
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "expected a client certificate, got none")
            return str(names[0].decode())
        if not claimed:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected a client_id")
        return claimed

    def Pull(self, request: pb.PullRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:  # noqa: N802
        name = self._identity(request.client_id, context)
        if self.t.finished.is_set():
            self.t._client(name).told = True
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "the job is finished")
        client = self.t._client(name)
        client.polling += 1
        try:
            wait = min(request.wait_ms, 60_000) / 1000
            try:
                item = client.mailbox.get(timeout=wait)
            except queue.Empty:
                return
            if item is None:  # finish() woke this poll: the job is over
                client.told = True
                context.abort(grpc.StatusCode.OUT_OF_RANGE, "the job is finished")
                raise AssertionError("unreachable: abort raises")
            batch, task = item
            head = pb.TaskHeader(task_id=task.task_id, nonce=task.nonce, kind=batch.kind, round=batch.round,
                                 payload_size=memoryview(batch.payload).nbytes)
            sent = False
            try:
                body = self.t._chunks_of(batch)
                first = pb.Chunk(offset=0, data=body[0].data, sha256=body[0].sha256)
                first.task.CopyFrom(head)
                yield first
                yield from body[1:]
                sent = True
            finally:
                if not sent:  # the client went away mid-task: a dropout for this round
                    self.t._deliver(Reply(task.task_id, name, error="the task could not be delivered"))
        finally:
            client.polling -= 1
            client.last_seen = time.monotonic()

    def Push(self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext) -> pb.PushAck:  # noqa: N802
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("head") != "reply":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected a reply header in the first chunk")
            raise AssertionError("unreachable: abort raises")
        head = first.reply
        name = self._identity(head.client_id, context)
        self.t._client(name).last_seen = time.monotonic()
        if not self.t._expects(head.task_id):
            log.info("late or unknown reply from %r for task %r; discarded", name, head.task_id)
            self.t.stragglers += 1
            return pb.PushAck(received=False, reason="no such task in progress: late, or not sent to you")
        if head.error:
            return self._judged(Reply(head.task_id, name, error=head.error[:1000]))
        try:
            asm = Assembler(head.payload_size, max_bytes=self.t.max_payload_bytes)
            asm.add(first)
            for chunk in request_iterator:
                asm.add(chunk)
            payload = asm.result()
        except RecordError as exc:
            log.warning("reply from %r for task %r rejected: %s", name, head.task_id, exc)
            return self._judged(Reply(head.task_id, name, error=f"{type(exc).__name__}: {exc}"))
        return self._judged(Reply(head.task_id, name, payload=payload))

    def _judged(self, reply: Reply) -> pb.PushAck:
        """Hand ``reply`` to the driver and answer the client with the driver's verdict."""
        verdict: queue.Queue[str | None] = queue.Queue(maxsize=1)

        def ack(why: str | None) -> None:  # the first verdict counts; later ones are ignored
            with contextlib.suppress(queue.Full):
                verdict.put_nowait(why)

        self.t._deliver(Reply(reply.task_id, reply.client_id, payload=reply.payload, error=reply.error,
                              ack=ack))
        try:
            why = verdict.get(timeout=self.t.verdict_timeout)
        except queue.Empty:
            why = "the server did not evaluate this reply in time"
        return pb.PushAck(received=why is None, reason=why or "")


@final
class GrpcTransport(Transport):
    """A gRPC server that clients connect out to.

    Parameters
    ----------
    bind
        ``host:port`` to listen on; port 0 picks a free one (see :attr:`port`).
    credentials
        TLS credentials, normally :func:`~fedra.transport.grpc.server_credentials` (mutual TLS); under
        TLS a client's identity is its certificate's name and the ``client_id`` it claims is ignored.
        ``None`` means plain text (insecure; for loopback and tests).
    authority
        Under TLS, decides per call whether a verified client is admitted (not revoked, on the
        allow-list, in date) and names it; it re-reads the lists when they change, so a revocation
        applies to a running server. A refused call is logged with the reason and answered
        ``PERMISSION_DENIED``. ``None``: every certificate the CA signed is admitted, named by its CN.

    Raises
    ------
    ConfigError
        An ``authority`` without ``credentials``.
    TransportError
        ``bind`` cannot be listened on.
    """

    def __init__(self, bind: str = "127.0.0.1:0", *, credentials: grpc.ServerCredentials | None = None,
                 authority: Authority | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 client_ttl: float = 30.0, max_workers: int = 64, verdict_timeout: float = 600.0) -> None:
        if authority is not None and credentials is None:
            raise ConfigError("authority: expected TLS credentials with it (server_credentials(...)), got "
                              "credentials=None; an allow-list means nothing on a plain-text server")
        self.secure = credentials is not None
        self.authority = authority
        self.max_payload_bytes = max_payload_bytes
        self.client_ttl = client_ttl
        self.verdict_timeout = verdict_timeout
        self.stragglers = 0
        #: set by :meth:`finish`: clients polling from then on are told the job is over
        self.finished = threading.Event()
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()
        self._results: queue.Queue[Reply] = queue.Queue()
        self._current: set[str] = set()
        self._chunk_cache: tuple[TaskBatch, list[pb.Chunk]] | None = None
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix="fedra-grpc"),
                                   options=CHANNEL_OPTIONS)
        rpc.add_FederationServicer_to_server(_Servicer(self), self._server)  # type: ignore[no-untyped-call]
        port = (self._server.add_secure_port(bind, credentials) if credentials is not None
                else self._server.add_insecure_port(bind))
        if port == 0:
            raise TransportError(f"cannot listen on {bind}: expected a free host:port, the bind failed")
        self.port = port
        self._server.start()

    # -- state shared with the servicer -----------------------------------------------------------
    def _client(self, name: str) -> _Client:
        with self._lock:
            c = self._clients.get(name)
            if c is None:
                c = self._clients[name] = _Client(queue.Queue(), time.monotonic())
                log.info("client %r connected", name)
            return c

    def _chunks_of(self, batch: TaskBatch) -> list[pb.Chunk]:
        """The round payload's chunks, cut and hashed once per exchange and sent to every client."""
        with self._lock:
            cached = self._chunk_cache
            if cached is None or cached[0] is not batch:
                cached = self._chunk_cache = (batch, list(chunks(batch.payload)))
            return cached[1]

    def _expects(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._current

    def _deliver(self, reply: Reply) -> None:
        with self._lock:
            live = reply.task_id in self._current
            if live:
                self._results.put(reply)
        if not live:
            self.stragglers += 1
            if reply.ack is not None:
                reply.ack("the round closed before this reply was evaluated (it came after the deadline)")

    # -- the transport contract ---------------------------------------------------------------------
    def clients(self) -> Sequence[str]:
        now = time.monotonic()
        with self._lock:
            return sorted(n for n, c in self._clients.items() if c.polling or now - c.last_seen < self.client_ttl)

    def wait_for_clients(self, n: int, *, timeout: float) -> Sequence[str]:
        """Block until at least ``n`` clients are connected (or ``timeout`` passes); returns them."""
        deadline = time.monotonic() + timeout
        while len(found := self.clients()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = {t.task_id for t in batch.tasks}
        owner = {t.task_id: t.client_id for t in batch.tasks}
        with self._lock:
            self._current = set(ids)
        for t in batch.tasks:
            self._client(t.client_id).mailbox.put((batch, t))
        pending = set(ids)
        yielded: list[Reply] = []
        try:
            while pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    reply = self._results.get(timeout=remaining)
                except queue.Empty:
                    return
                if owner.get(reply.task_id) == reply.client_id:  # another client's reply settles nothing
                    pending.discard(reply.task_id)
                yielded.append(reply)
                yield reply
        finally:
            for r in yielded:  # a consumer that gave no verdict must not leave the client waiting
                if r.ack is not None:
                    r.ack("the server did not evaluate this reply")
            with self._lock:
                self._current = set()
                self._chunk_cache = None
            while True:  # replies that came after the driver stopped listening: stragglers
                try:
                    late = self._results.get_nowait()
                except queue.Empty:
                    break
                self.stragglers += 1
                if late.ack is not None:
                    late.ack("the round closed before this reply was evaluated (it came after the deadline)")
            with self._lock:
                for c in self._clients.values():  # undelivered tasks of this exchange are void now
                    kept = [item for item in list(c.mailbox.queue) if item is None or item[1].task_id not in ids]
                    with c.mailbox.mutex:
                        c.mailbox.queue.clear()
                        c.mailbox.queue.extend(kept)

    def finish(self, *, linger: float = 0.0) -> None:
        """Tell every client that polls from now on that the job is over; wait ``linger`` s for them."""
        self.finished.set()
        with self._lock:
            clients = list(self._clients.values())
        for c in clients:
            c.mailbox.put(None)
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline and not all(c.told for c in clients):
            time.sleep(0.05)

    def close(self) -> None:
        self._server.stop(grace=1.0).wait()
