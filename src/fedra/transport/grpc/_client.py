"""The client side of the gRPC transport: connect out, pull a task, push its reply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, final

import grpc

from fedra.address import check_address
from fedra.errors import AccessDenied, RecordError, TransportError
from fedra.records import DEFAULT_MAX_PAYLOAD_BYTES
from fedra.transport.base import Buffer, JobFinished, Task
from fedra.transport.grpc import fedra_pb2 as pb
from fedra.transport.grpc._chunks import Assembler, chunks, decode_chunk
from fedra.transport.grpc._server import CHANNEL_OPTIONS, METHODS
from fedra.transport.grpc._tls import client_credentials

__all__ = ["GrpcConnector", "PulledTask"]


@dataclass(frozen=True, slots=True)
class PulledTask:
    task: Task
    kind: str
    round: int
    payload: memoryview


#: The server refused this client (revoked, not on the allow-list, expired...): retrying will not help.
_REFUSED: Final = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def _raise(what: str, exc: grpc.RpcError) -> NoReturn:
    code, details = exc.code(), exc.details()
    if code in _REFUSED:
        raise AccessDenied(f"{what}: the server refused this client ({code.name}): {details}; ask the "
                           "federation's operator to issue or re-admit its certificate") from None
    raise TransportError(f"{what} failed: {code.name}: {details}") from exc


@final
class GrpcConnector:
    """One client's connection to the server. Every call has a deadline.

    gRPC errors become :class:`~fedra.errors.TransportError` (worth retrying), except the server's refusal
    of this client (``PERMISSION_DENIED``, ``UNAUTHENTICATED``), which is :class:`~fedra.errors.AccessDenied`.
    Use :meth:`mutual_tls` to connect with a certificate from the federation directory. A ``target`` that is
    not HOST:PORT (port 1 to 65535) is a ConfigError at once (see :func:`fedra.address.check_address`).
    """

    def __init__(self, target: str, *, client_id: str, credentials: grpc.ChannelCredentials | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, push_timeout: float = 600.0) -> None:
        check_address(target, what="target", listen=False)
        self.client_id = client_id
        self.max_payload_bytes = max_payload_bytes
        self.push_timeout = push_timeout
        self._channel = (grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS) if credentials
                         else grpc.insecure_channel(target, options=CHANNEL_OPTIONS))
        # payload chunks travel as raw bytes, encoded and decoded by ._chunks (see there why)
        self._pull = self._channel.unary_stream(METHODS["Pull"],
                                                request_serializer=pb.PullRequest.SerializeToString)
        self._push = self._channel.stream_unary(METHODS["Push"], response_deserializer=pb.PushAck.FromString)

    @classmethod
    def mutual_tls(cls, target: str, federation_dir: Path | str, name: str, **options: Any) -> GrpcConnector:
        """Connect to ``target`` with the certificate issued to ``name``; ``client_id`` is ``name``.

        ``options`` are the other keyword arguments of the constructor. Raises ConfigError if the
        certificate, key or CA certificate is missing (see :func:`~fedra.transport.grpc.client_credentials`).
        """
        return cls(target, client_id=name, credentials=client_credentials(federation_dir, name), **options)

    def pull(self, wait: float) -> PulledTask | None:
        """The next task, or ``None`` when none came within ``wait`` seconds."""
        try:
            stream = self._pull(pb.PullRequest(client_id=self.client_id, wait_ms=int(wait * 1000)),
                                timeout=wait + self.push_timeout)
            head: pb.TaskHeader | None = None
            asm: Assembler | None = None
            for message in stream:
                frame = decode_chunk(message)
                if head is None:
                    if frame.task is None:
                        raise TransportError("task stream: expected a task header in the first chunk")
                    head = frame.task
                    asm = Assembler(head.payload_size, max_bytes=self.max_payload_bytes)
                assert asm is not None
                asm.add(frame)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                raise JobFinished(exc.details() or "the job is finished") from None
            _raise("pull from the server", exc)
        except RecordError as exc:
            raise TransportError(f"task stream rejected: {exc}") from exc
        if head is None or asm is None:
            return None
        return PulledTask(Task(head.task_id, self.client_id, head.nonce), head.kind, head.round, asm.result())

    def push(self, task: Task, payload: Buffer | None = None, *, error: str | None = None) -> pb.PushAck:
        size = 0 if payload is None else memoryview(payload).nbytes
        head = pb.ReplyHeader(task_id=task.task_id, client_id=self.client_id, nonce=task.nonce,
                              payload_size=size, error=error or "")
        try:
            ack: pb.PushAck = self._push(chunks(payload if payload is not None else b"", reply=head),
                                         timeout=self.push_timeout)
        except grpc.RpcError as exc:
            _raise("push to the server", exc)
        return ack

    def close(self) -> None:
        self._channel.close()
