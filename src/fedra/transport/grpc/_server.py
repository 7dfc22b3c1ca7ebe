"""The server side of the gRPC transport: clients pull tasks and push replies; the driver sees a Transport.

Every client call has a deadline; every stream is chunked (see :mod:`._chunks`); message sizes and
keepalive are set explicitly below. Replies are handed to the driver as they complete, and the driver
validates them (task, client, nonce, schema, finiteness), exactly as for the simulation.

Memory is bounded by what is in flight, not by the number of clients. At most ``max_sending`` clients
are sent the round's payload at once (each stream then holds at most a chunk or two inside gRPC), and
at most ``max_replies`` reply buffers are alive at once: a reply's buffer counts from its first chunk
until the driver has folded it (or refused it) and dropped the last view of it. Replies wait for a slot
lowest task first, because the driver folds in task order; and the round's head of line (the lowest
task still unanswered) is always admitted, so replies held for their turn can never block the one they
wait for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import grpc

from fedra.address import check_address
from fedra.errors import AccessDenied, ConfigError, PayloadTooLarge, RecordError, TransportError
from fedra.records import DEFAULT_MAX_PAYLOAD_BYTES
from fedra.transport.base import Reply, Task, TaskBatch, Transport
from fedra.transport.grpc import fedra_pb2 as pb
from fedra.transport.grpc._chunks import (
    CHUNK_SIZE,
    Assembler,
    chunk_checksums,
    chunk_size_for,
    chunks,
    decode_chunk,
)

if TYPE_CHECKING:
    from fedra.pki import Authority

__all__ = ["CHANNEL_OPTIONS", "METHODS", "SERVICE", "GrpcTransport"]

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


#: The server's receive window stays small and fixed: with gRPC's bandwidth-delay probing, each reply
#: stream's window grows to megabytes on a fast link, and gRPC buffers that much of every client's
#: reply before fedra reads a byte of it, so the memory of a round grew with the number of clients.
#: With a fixed window, a reply that waits for a slot (see _Admission) waits in its client. The window
#: is what every waiting reply's stream may hold inside gRPC, so it is small: a stream being read is
#: granted a whole chunk's window when fedra asks for the chunk, whatever this is. For 100 clients x
#: 4 MiB with 256 KiB chunks, 16 KiB instead of 256 KiB took the server's peak from 32 x the model's size
#: above job start to 24-26 x, with no measurable change in round time (bench/bench_network.py).
#: GrpcTransport adds gRPC's read-buffer cap to these (see :func:`read_buffer_cap_for`).
SERVER_OPTIONS: Final[list[tuple[str, Any]]] = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 16 << 10),
    ("grpc.experimental.tcp_max_read_chunk_size", 256 << 10),
]

#: gRPC's TCP endpoint keeps what it allocated for reads past the read that needed it, for the
#: connection's next read; without a cap on its read buffer, after a client's reply of 256 KiB messages
#: that was 230-500 KiB per connection, held for as long as the connection lives (100 clients kept
#: 21-33 MiB, 5-8 x a 1M-float model, from their first reply to the end of the job). The endpoint sizes
#: a connection's next read from its recent reads, up to the cap, and allocates it as 64 KiB slices when
#: that size is 12 KiB or more, as 8 KiB slices below; an idle connection holds the allocation until its
#: next read (gRPC would shrink it under a resource quota's memory pressure, which grpcio's Python API
#: cannot set). Just under 12 KiB, ~5 KiB stays per connection; at 16 KiB, one 64 KiB slice (~60 KiB).
#: The smaller reads cost the server about 0.1 s more CPU per 400 MB received (bench/bench_grpc_connection.py):
#: see :func:`read_buffer_cap_for` for which one a server takes.
SMALL_READ_BUFFER: Final = (12 << 10) - 1
LARGE_READ_BUFFER: Final = 16 << 10


def read_buffer_cap_for(nbytes: int) -> int:
    """The server's cap on gRPC's read buffer for payloads of ``nbytes`` (see :data:`SMALL_READ_BUFFER`).

    What a connection keeps counts against a model of a few MiB (100 clients at 60 KiB each were 1.5 x a
    1M-float model), not against one of tens of MiB (0.15 x a 10M-float one), where the smaller reads'
    CPU shows in round time instead (2-8 % at 10 clients x 10M floats). So payloads sent in the largest
    chunks (16 MiB and more, see ``chunk_size_for``) keep reads of 64 KiB, and smaller ones take the
    small cap (BENCHMARKS.md, "Networked rounds").
    """
    return LARGE_READ_BUFFER if chunk_size_for(nbytes) >= CHUNK_SIZE else SMALL_READ_BUFFER


#: The service and its methods' paths, as declared in fedra.proto (a test checks them against the
#: generated stub). Payload chunks bypass protobuf's Python objects: see :mod:`._chunks`.
SERVICE: Final = "fedra.v1.Federation"
METHODS: Final = {"Pull": f"/{SERVICE}/Pull", "Push": f"/{SERVICE}/Push"}


@dataclass(slots=True)
class _Client:
    mailbox: queue.Queue[tuple[TaskBatch, Task] | None]  # None: the job is finished
    last_seen: float
    polling: int = 0
    told: bool = False  # has been told the job is finished


@final
class _Admission:
    """Counts live reply buffers against a limit; waiting replies are admitted lowest task first.

    ``head`` is the lowest task index of the round without a reply yet: it is admitted even when every
    slot is taken, because the replies holding the slots may be waiting (in the driver) for it. And when
    every live buffer has been judged (the driver holds them all, for a task whose client may never
    answer), the lowest waiting reply is admitted too: only a new reply can move such a driver on, and
    holding is its choice (it holds at most ``GrpcTransport.reorder_window`` for the task order, and all
    of them when a robustness option needs every update at once).

    A reply still being received that has brought no chunk for ``stall`` seconds while another reply
    waits for a slot (a client that stopped sending without hanging up) is cancelled, so that its slot goes
    to the waiting one: its client is a dropout for the round.

    Each waiting reply has a condition of its own, and a change wakes only the replies it may admit (the
    head of line; the lowest waiting task, when a slot is free). One condition for all of them woke every
    waiting reply at every change: at 100 clients with 8 slots that was ~5,000 wake-ups per round, each a
    thread taking the GIL to find it still had to wait.
    """

    #: how often a waiting reply asks whether it is still wanted (its client gone, its round over early)
    POLL: Final = 0.25

    def __init__(self, slots: int, stall: float = math.inf) -> None:
        self.slots = slots
        self.stall = stall
        self._lock = threading.RLock()  # an RLock: a release may run inside a holder's own frame
        self._live = 0
        self._pending: set[Hashable] = set()  # live buffers the driver has not judged yet
        # replies being received: when each last brought a chunk, and how to cancel its stream
        self._receiving: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        #: replies cancelled because they stalled while another waited for a slot
        self.stalled = 0
        self._waiting: list[tuple[int, threading.Condition]] = []  # (task index, its condition)
        self.head = 0
        #: the most reply buffers alive at once since the transport started
        self.peak = 0

    def acquire(self, index: int, *, still_wanted: Callable[[], bool], key: Hashable = None,
                cancel: Callable[[], None] | None = None) -> bool:
        """Wait for a slot for the reply to task ``index``; False if it stopped being wanted first.

        ``key`` names the buffer in :meth:`judged` and :meth:`release` (the task id: unique across rounds,
        unlike the index); by default the index. ``cancel`` cancels the reply's stream if it stalls (see
        :meth:`progress`); without it the reply is never cancelled.
        """
        key = index if key is None else key
        # still_wanted() takes the transport's lock, and the transport calls advance() (this lock) when
        # it delivers: never call it while holding this lock, or the two can deadlock
        me = (index, threading.Condition(self._lock))
        with self._lock:
            self._waiting.append(me)
        try:
            while still_wanted():
                with self._lock:
                    if self._admits(index, self._lowest()):
                        self._live += 1
                        self._pending.add(key)
                        if cancel is not None:
                            self._receiving[key] = (time.monotonic(), cancel)
                        self.peak = max(self.peak, self._live)
                        return True
                    # a stalled reply is cancelled only for want of a slot, not while one is free
                    stalled = self._stalled(time.monotonic()) if self._live >= self.slots else []
                    if not stalled:
                        me[1].wait(self.POLL)
                for stop in stalled:  # outside the lock: cancelling runs into gRPC
                    stop()
            return False
        finally:
            with self._lock:
                self._waiting.remove(me)
                self._wake()

    def release(self, key: Hashable) -> None:
        """Buffer ``key`` is gone (folded, refused, or its stream failed)."""
        with self._lock:
            self._live -= 1
            self._pending.discard(key)
            self._receiving.pop(key, None)
            self._wake()

    def progress(self, key: Hashable) -> None:
        """Reply ``key`` brought a chunk."""
        with self._lock:
            if (held := self._receiving.get(key)) is not None:
                self._receiving[key] = (time.monotonic(), held[1])

    def received(self, key: Hashable) -> None:
        """Reply ``key`` is received (or its stream ended): nothing left to cancel."""
        with self._lock:
            self._receiving.pop(key, None)

    def _stalled(self, now: float) -> list[Callable[[], None]]:  # with self._lock held
        stalled = [key for key, (last, _) in self._receiving.items() if now - last >= self.stall]
        for key in stalled:
            log.warning("reply for task %r brought nothing for %.0f s while another waited for a slot: "
                        "cancelled, its client is a dropout for this round", key, now - self._receiving[key][0])
        self.stalled += len(stalled)
        return [self._receiving.pop(key)[1] for key in stalled]

    def cancel_receiving(self) -> None:
        """The round is over: cancel the replies still being received (stragglers, whose buffers go now)."""
        with self._lock:
            stops = [stop for _, stop in self._receiving.values()]
            self._receiving.clear()
        for stop in stops:
            stop()

    def judged(self, key: Hashable) -> None:
        """The driver has judged buffer ``key``: it is held by the driver from now on, or soon gone."""
        with self._lock:
            if key in self._pending:
                self._pending.discard(key)
                if not self._pending:
                    self._wake()

    def _lowest(self) -> int:  # with self._lock held, while a reply waits
        return min(i for i, _ in self._waiting)

    def _admits(self, index: int, lowest: int) -> bool:  # with self._lock held
        return index == self.head or (index == lowest and (self._live < self.slots or not self._pending))

    def _wake(self, *, everyone: bool = False) -> None:  # with self._lock held
        if not self._waiting:
            return
        lowest = self._lowest()
        for index, cv in self._waiting:
            if everyone or self._admits(index, lowest):
                cv.notify()

    def advance(self, head: int) -> None:
        """Move the head of line; -1: the round is over, and every waiting reply asks if it is wanted."""
        with self._lock:
            self.head = head
            self._wake(everyone=head < 0)


@final
class _Sender:
    """One stream's hold on a send slot (see :class:`_SendSlots`)."""

    __slots__ = ("client", "since")

    def __init__(self, client: str) -> None:
        self.client = client
        self.since = math.inf  # when gRPC was handed the stream's current chunk; inf: between chunks


@final
class _SendSlots:
    """At most ``slots`` clients are sent the round's payload at once, and none of the slots is stalled.

    A client holds its slot for its whole download, so that a fast client gets the model in one go and its
    reply comes back early while the others wait their turn. A client that stops taking the payload (a slow
    link, or a client that stopped reading) would hold its slot for as long as its call lasts, and ``slots``
    such clients would keep every other client from its task until the round's deadline. So a slot is held
    only while its stream keeps up: a stream whose current chunk gRPC has not taken for ``stall`` seconds
    gives its slot to the next client waiting for one, and finishes its download outside the count, with
    the chunk or two it holds in gRPC.
    """

    def __init__(self, slots: int, stall: float) -> None:
        self.slots = slots
        self.stall = stall
        self._cv = threading.Condition()
        self._holders: set[_Sender] = set()
        #: slots taken from stalled streams since the transport started
        self.stalled = 0

    def acquire(self, client: str, *, timeout: float) -> _Sender | None:
        """A slot for ``client``'s download, or ``None`` if none came free within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                now = time.monotonic()
                if len(self._holders) >= self.slots:
                    self._reclaim(now)
                if len(self._holders) < self.slots:
                    sender = _Sender(client)
                    self._holders.add(sender)
                    return sender
                if now >= deadline:
                    return None
                first_stall = min(h.since for h in self._holders) + self.stall
                self._cv.wait(min(deadline, first_stall) - now)

    def _reclaim(self, now: float) -> None:  # with self._cv held
        for holder in [h for h in self._holders if now - h.since >= self.stall]:
            self._holders.discard(holder)
            self.stalled += 1
            log.info("client %r took no payload for %.1f s: its send slot goes to the next client, and its "
                     "download goes on outside the limit", holder.client, now - holder.since)

    @staticmethod
    def handing(sender: _Sender) -> None:
        """gRPC is being handed the stream's next chunk."""
        sender.since = time.monotonic()

    @staticmethod
    def taken(sender: _Sender) -> None:
        """gRPC has taken the chunk."""
        sender.since = math.inf

    def release(self, sender: _Sender) -> None:
        """The download is over (or failed); a no-op for a stream whose slot was reclaimed."""
        with self._cv:
            if sender in self._holders:
                self._holders.discard(sender)
                self._cv.notify()


@final
class _Servicer:
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

    def Pull(self, request: pb.PullRequest, context: grpc.ServicerContext) -> Iterator[bytes]:  # noqa: N802
        name = self._identity(request.client_id, context)
        if self.t.finished.is_set():
            self.t._client(name).told = True
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "the job is finished")
        client = self.t._client(name)
        client.polling += 1
        try:
            deadline = time.monotonic() + min(request.wait_ms, 60_000) / 1000
            item: tuple[TaskBatch, Task] | None = None
            while True:  # in slices, so that a client that went away stops counting as available at once
                left = deadline - time.monotonic()
                if left <= 0 or not context.is_active():
                    return
                try:
                    item = client.mailbox.get(timeout=min(left, 0.25))
                    break
                except queue.Empty:
                    continue
            if item is None:  # finish() woke this poll: the job is over
                client.told = True
                context.abort(grpc.StatusCode.OUT_OF_RANGE, "the job is finished")
                raise AssertionError("unreachable: abort raises")
            batch, task = item
            payload = memoryview(batch.payload_of(task)).cast("B")
            head = pb.TaskHeader(task_id=task.task_id, nonce=task.nonce, kind=batch.kind, round=batch.round,
                                 payload_size=payload.nbytes)
            sent = False
            slots, sender = self.t._send_slots, None
            try:
                while (sender := slots.acquire(name, timeout=0.25)) is None:
                    if not context.is_active() or not self.t._expects(task.task_id):
                        return
                # one copy per send (gRPC needs bytes): caching the encoded chunks instead would hold
                # another copy of the model for the whole round; the checksums are computed once per round
                for message in chunks(payload, task=head,
                                      checksums=self.t._checksums_of(batch) if task.payload is None else None):
                    slots.handing(sender)
                    yield message  # returns once gRPC has taken the message
                    slots.taken(sender)
                    del message  # not alive while the next one is encoded: one chunk per stream, not two
                sent = True
            finally:
                if sender is not None:
                    slots.release(sender)
                if not sent:  # the client went away mid-task: a dropout for this round
                    self.t._deliver(Reply(task.task_id, name, error="the task could not be delivered"))
        finally:
            client.polling -= 1
            # a cancelled poll means the client hung up (it was killed, or its link was cut): it is not
            # available until it polls again, rather than for client_ttl more seconds
            client.last_seen = time.monotonic() if context.is_active() else -math.inf

    def Push(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> pb.PushAck:  # noqa: N802
        try:
            first = decode_chunk(next(request_iterator, b""))
        except RecordError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"expected a reply header chunk: {exc}")
            raise AssertionError("unreachable: abort raises") from exc
        if first.reply is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected a reply header in the first chunk")
            raise AssertionError("unreachable: abort raises")
        head = first.reply
        name = self._identity(head.client_id, context)
        self.t._client(name).last_seen = time.monotonic()
        index = self.t._index_of(head.task_id)
        if index is None:
            log.info("late or unknown reply from %r for task %r; discarded", name, head.task_id)
            self.t.stragglers += 1
            return pb.PushAck(received=False, reason="no such task in progress: late, or not sent to you")
        if head.error:
            return self._judged(Reply(head.task_id, name, error=head.error[:1000]))
        if head.payload_size > self.t.max_payload_bytes:  # refused before it waits for a slot
            big = PayloadTooLarge(size=head.payload_size, limit=self.t.max_payload_bytes, what="declared payload")
            log.warning("reply from %r for task %r rejected: %s", name, head.task_id, big)
            return self._judged(Reply(head.task_id, name, error=f"{type(big).__name__}: {big}"))
        if not self.t._admission.acquire(
                index, key=head.task_id, cancel=context.cancel,
                still_wanted=lambda: context.is_active() and self.t._expects(head.task_id)):
            self.t.stragglers += 1
            return pb.PushAck(received=False, reason="the round closed before this reply could be received")
        try:
            asm = Assembler(head.payload_size, max_bytes=self.t.max_payload_bytes)
        except BaseException:
            self.t._admission.release(head.task_id)
            raise
        # the slot is the buffer's: given back when the last view of the buffer is gone, that is once the
        # driver has folded or refused the reply (or the stream failed)
        weakref.finalize(asm.array, self.t._admission.release, head.task_id)
        try:
            try:
                asm.add(first)
                del first
                while (message := next(request_iterator, None)) is not None:
                    asm.add(decode_chunk(message))
                    del message  # not alive while gRPC receives the next one: one chunk per stream, not two
                    self.t._admission.progress(head.task_id)
            finally:  # received, refused or broken off: there is no stream left to cancel
                self.t._admission.received(head.task_id)
            payload = asm.result()
        except RecordError as exc:
            log.warning("reply from %r for task %r rejected: %s", name, head.task_id, exc)
            return self._judged(Reply(head.task_id, name, error=f"{type(exc).__name__}: {exc}"))
        except grpc.RpcError:  # the client hung up mid-reply (killed, link cut), or it stalled and was cut
            del asm
            log.info("client %r hung up in the middle of its reply to task %r: a dropout", name, head.task_id)
            self.t._deliver(Reply(head.task_id, name, error="the client hung up in the middle of its reply"))
            return pb.PushAck(received=False, reason="the reply stream broke off")
        del asm
        return self._judged(Reply(head.task_id, name, payload=payload))

    def _judged(self, reply: Reply) -> pb.PushAck:
        """Hand ``reply`` to the driver and answer the client with the driver's verdict."""
        verdict: queue.Queue[str | None] = queue.Queue(maxsize=1)

        def ack(why: str | None) -> None:  # the first verdict counts; later ones are ignored
            with contextlib.suppress(queue.Full):
                verdict.put_nowait(why)

        self.t._deliver(Reply(reply.task_id, reply.client_id, payload=reply.payload, error=reply.error,
                              ack=ack))
        del reply  # the driver holds the payload from here; this frame must not keep it alive
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
    max_sending
        Clients sent the round's payload at the same time; the others wait their turn.
    reorder_window
        Replies the driver may hold for an earlier task's (to fold in task order) before it folds them
        ahead of it; from 0 to ``max_replies - 1``, by default under half of ``max_replies`` (see
        :attr:`reorder_window`).
    reply_stall
        Seconds a reply being received may bring no chunk while another reply waits for a slot, before
        its stream is cancelled and its client counted a dropout (a client that stopped sending without
        hanging up would otherwise hold its slot until its call's deadline).
    send_stall
        Seconds a client's download may wait for gRPC to take one chunk before its send slot goes to the
        next client (a slow link, or a client that stopped reading); its download goes on outside the
        limit. Without it, ``max_sending`` clients that stop reading would keep every other client from
        its task until the round's deadline.
    max_replies
        Reply buffers alive at the same time (received, or waiting to be folded); each costs one
        model's size. The round's next reply in task order is admitted beyond the limit.
    read_buffer
        The cap on gRPC's read buffer per connection, in bytes: :func:`read_buffer_cap_for` the
        model's encoded size where it is known (``fedra server`` passes it), else the small one, which
        keeps ~5 KiB per idle connection.

    Raises
    ------
    ConfigError
        ``bind`` is not HOST:PORT with a port from 0 to 65535 (see :func:`check_address`), or an
        ``authority`` without ``credentials``.
    TransportError
        ``bind`` cannot be listened on (a host not of this machine, a port in use).
    """

    def __init__(self, bind: str = "127.0.0.1:0", *, credentials: grpc.ServerCredentials | None = None,
                 authority: Authority | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 client_ttl: float = 30.0, max_workers: int = 64, verdict_timeout: float = 600.0,
                 max_sending: int = 8, max_replies: int = 8, read_buffer: int = SMALL_READ_BUFFER,
                 send_stall: float = 1.0, reorder_window: int | None = None, reply_stall: float = 30.0) -> None:
        check_address(bind, what="bind", listen=True)
        if authority is not None and credentials is None:
            raise ConfigError("authority: expected TLS credentials with it (server_credentials(...)), got "
                              "credentials=None; an allow-list means nothing on a plain-text server")
        self.secure = credentials is not None
        self.authority = authority
        self.max_payload_bytes = max_payload_bytes
        self.client_ttl = client_ttl
        self.verdict_timeout = verdict_timeout
        if max_sending < 1 or max_replies < 1:
            raise ConfigError(f"max_sending, max_replies: expected at least 1 each, got {max_sending} and "
                              f"{max_replies}")
        if reorder_window is None:
            reorder_window = (max_replies - 1) // 2
        if not 0 <= reorder_window < max_replies:
            raise ConfigError(f"reorder_window: expected 0 to max_replies - 1 = {max_replies - 1}, got "
                              f"{reorder_window}; the driver would hold every reply slot while it waits for "
                              f"a client that may never answer")
        self._reorder_window = reorder_window
        if not send_stall > 0:
            raise ConfigError(f"send_stall: expected a positive number of seconds, got {send_stall}")
        if not reply_stall > 0:
            raise ConfigError(f"reply_stall: expected a positive number of seconds, got {reply_stall}")
        if read_buffer < 1:
            raise ConfigError(f"read_buffer: expected a positive number of bytes, got {read_buffer}; "
                              f"use read_buffer_cap_for(model bytes)")
        #: replies that came after their round closed (or for no task in progress): discarded
        self.stragglers = 0
        #: set by :meth:`finish`: clients polling from then on are told the job is over
        self.finished = threading.Event()
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()
        self._results: queue.Queue[Reply] = queue.Queue()
        self._current: dict[str, int] = {}  # task id -> index in the round
        self._unanswered: list[bool] = []
        self._checksums: tuple[TaskBatch, list[int]] | None = None
        self._send_slots = _SendSlots(max_sending, send_stall)
        self._admission = _Admission(max_replies, reply_stall)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix="fedra-grpc"),
                                   options=[*CHANNEL_OPTIONS, *SERVER_OPTIONS,
                                            ("grpc.experimental.tcp_max_read_buffer_size", read_buffer)])
        servicer = _Servicer(self)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            # payload chunks travel as raw bytes, encoded and decoded by ._chunks (no serializer here)
            "Pull": grpc.unary_stream_rpc_method_handler(
                servicer.Pull, request_deserializer=pb.PullRequest.FromString),
            "Push": grpc.stream_unary_rpc_method_handler(
                servicer.Push, response_serializer=pb.PushAck.SerializeToString),
        }),))
        try:
            port = (self._server.add_secure_port(bind, credentials) if credentials is not None
                    else self._server.add_insecure_port(bind))
        except RuntimeError as exc:  # grpcio raises where older releases returned 0
            port, reason = 0, f" ({exc})"
        else:
            reason = ""
        if port == 0:
            raise TransportError(f"cannot listen on {bind}: expected an address of this host and a port no "
                                 f"other process holds, but the bind failed{reason}; check the host name "
                                 f"and pick another port, or 0 for any free one")
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

    def _checksums_of(self, batch: TaskBatch) -> list[int]:
        """The CRC-32 of each chunk of the round's payload: computed once per exchange, for every client."""
        with self._lock:
            cached = self._checksums
            if cached is None or cached[0] is not batch:
                cached = self._checksums = (batch, chunk_checksums(batch.payload))
            return cached[1]

    def _expects(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._current

    def _index_of(self, task_id: str) -> int | None:
        with self._lock:
            return self._current.get(task_id)

    def _judged_task(self, task_id: str) -> None:
        """The driver has judged task ``task_id``'s reply: the head of line may move past it.

        Counting a reply when it arrived would let the head of line run ahead of a driver that is behind,
        admitting reply after reply beyond the limit. Counting it when its buffer is freed would deadlock
        with a driver that holds the last reply it took until it takes the next one. Judged is between:
        the judged head is folded at once (every earlier task is settled), so at most the slots, the
        judged head and the next head are alive.
        """
        head = None
        with self._lock:
            index = self._current.get(task_id)
            if index is not None and self._unanswered[index]:
                self._unanswered[index] = False
                if index == self._admission.head:
                    head = next((i for i in range(index, len(self._unanswered)) if self._unanswered[i]),
                                len(self._unanswered))
        # outside self._lock: see _Admission.acquire
        self._admission.judged(task_id)
        if head is not None:
            self._admission.advance(head)

    @property
    def reorder_window(self) -> int:
        """Replies the driver may hold for an earlier task: by default under half the reply slots, so
        that while it waits for a client that never answers, the other half still receives replies."""
        return self._reorder_window

    @property
    def stalled_replies(self) -> int:
        """Replies cancelled because they stalled while another waited for a slot (see ``reply_stall``)."""
        return self._admission.stalled

    @property
    def stalled_sends(self) -> int:
        """Send slots taken from downloads that stalled (see ``send_stall``) since the server started."""
        return self._send_slots.stalled

    @property
    def peak_replies_in_flight(self) -> int:
        """The most reply buffers that were alive at once (each one model's size)."""
        return self._admission.peak

    def _deliver(self, reply: Reply) -> None:
        if reply.ack is None:  # nothing for the driver to judge (the task never reached its client)
            self._judged_task(reply.task_id)
        else:  # the reply counts as answered once the driver has judged it: see _judged_task
            inner, task_id = reply.ack, reply.task_id

            def ack(why: str | None) -> None:  # must not refer to the reply: a cycle would keep its payload
                inner(why)
                self._judged_task(task_id)

            reply = Reply(reply.task_id, reply.client_id, payload=reply.payload, error=reply.error, ack=ack)
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

    def late_replies(self) -> int:
        return self.stragglers

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
            self._current = {t.task_id: i for i, t in enumerate(batch.tasks)}
            self._unanswered = [True] * len(batch.tasks)
        self._admission.advance(0)
        for t in batch.tasks:
            self._client(t.client_id).mailbox.put((batch, t))
        pending = set(ids)
        acks: list[Callable[[str | None], None]] = []  # not the replies: they would keep their payloads alive
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
                if reply.ack is not None:
                    acks.append(reply.ack)
                yield reply
                del reply
        finally:
            for ack in acks:  # a consumer that gave no verdict must not leave the client waiting
                ack("the server did not evaluate this reply")
            with self._lock:
                self._current = {}
                self._unanswered = []
                self._checksums = None
            self._admission.advance(-1)  # wake replies waiting for a slot: their round is over
            self._admission.cancel_receiving()  # and free the buffers of those still arriving
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
