"""Payloads as chunks: split with a CRC-32 per chunk, reassemble with every check on the way.

A payload larger than gRPC's message cap travels as a stream of ``Chunk`` messages (see ``fedra.proto``):
first a header chunk (the task's or the reply's header, no data), then :data:`CHUNK_SIZE` pieces of the
payload, each with its offset and CRC-32. The receiver knows the total size from the header, checks it
against its limit before allocating, and checks each piece's offset and checksum as it arrives: a corrupt,
reordered, truncated or oversized stream is a :class:`~fedra.errors.DecodeError` or
:class:`~fedra.errors.PayloadTooLarge`, never a silent acceptance.

Why a CRC and not a cryptographic digest: the checksum travels with the data, so whoever can change the
data can change the checksum too; no unkeyed digest stops an attacker. What stops one is TLS, which
authenticates every record. What the checksum is for is accidental damage, on the wire (TCP's 16-bit
checksum misses some) or in chunking code, and a 32-bit CRC detects every burst of up to 32 bits and all
but 2^-32 of the rest. The per-chunk SHA-256 it replaces was a quarter of the CPU of a networked round
(a ``perf`` profile of bench/bench_network.py). The CRC is zlib's CRC-32, computed by ISA-L (the ``isal``
package, with carry-less multiplication: 11 GiB/s here, against 3.5 for zlib's own code and 1.5 for
SHA-256, bench/bench_checksum.py), so any zlib can check it.

The wire format is the ``Chunk`` protobuf message, but the hot path encodes and decodes it here, by hand:
protobuf's Python runtime copies a ``bytes`` field on parse and again on access, and on serialization,
which a profile showed as a large share of a round. :func:`encode_chunk` writes the message with one copy
of the data (one ``bytes.join``); :func:`decode_chunk` returns the data as a view into the received
message, with no copy at all. Both are tested against the generated protobuf classes, so any protobuf
implementation still speaks this protocol.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, final

from fedra.errors import DecodeError, PayloadTooLarge
from fedra.records import empty_buffer
from fedra.transport.grpc import fedra_pb2 as pb

__all__ = ["CHUNK_SIZE", "MIN_CHUNK_SIZE", "MMAP_THRESHOLD", "Assembler", "Frame", "chunk_checksums",
           "chunk_size_for", "chunks", "crc32", "decode_chunk", "encode_chunk", "trim_threshold_for"]

#: The most bytes of payload per message: well under the message size limits set on both ends.
CHUNK_SIZE: Final = 2 << 20
#: The fewest bytes of payload per message (but for a payload's last chunk).
MIN_CHUNK_SIZE: Final = 128 << 10
#: A payload is cut into at least this many chunks (8 to 16), within the two sizes above.
CHUNKS_PER_PAYLOAD: Final = 8
#: glibc's mmap threshold for a process that moves payloads through this transport (see
#: :func:`fedra.linux.fix_mmap_threshold`): above the largest chunk message, so chunks are served from
#: and freed to the heap's arenas and reused, and below any payload buffer worth a mapping of its own.
#: With 1 MiB, every 2 MiB chunk was a fresh mapping that the kernel zeroed page by page: rounds of
#: 10 clients x 40 MB took 1.72 s against 1.36 s with 3 MiB, at the same peak memory (bench/bench_network.py).
MMAP_THRESHOLD: Final = CHUNK_SIZE + (1 << 20)
#: Chunk messages a server allocates and frees again and again: with GrpcTransport's defaults, 8 clients
#: being sent the payload and 8 replies being read, a chunk each on the Python side of gRPC.
CHUNKS_IN_USE: Final = 16


def trim_threshold_for(nbytes: int) -> int:
    """The free space a server's heap keeps at its top for payloads of ``nbytes`` (see
    :func:`fedra.linux.set_trim_threshold`): the chunk messages it handles at once, so that they are
    reused from the heap instead of given back to the kernel and faulted in again."""
    return CHUNKS_IN_USE * chunk_size_for(nbytes)


def chunk_size_for(nbytes: int) -> int:
    """The chunk size for ``nbytes`` of payload: a power of two, 1/16 to 1/8 of it, 128 KiB to 2 MiB.

    Every stream in flight holds a chunk or two on each side of gRPC (the sender's encoded message and
    gRPC's copy of it; the receiver's gRPC buffer and the ``bytes`` handed to Python), and a server has
    a few dozen streams in flight at once. With a fixed 2 MiB, a 4 MiB model's server held half a model
    per stream on top of the reply buffers themselves, and gRPC's own buffers grew with the chunk size
    (bench/bench_network.py, 100 clients x 4 MiB: 69 x the model's size above job start with 2 MiB
    chunks, 42 x with 512 KiB, 28-33 x with 256 KiB, at no measurable cost in round time). Smaller
    still saves little and costs time: every message is a trip through gRPC's Python layer on both
    ends (128 KiB made rounds about 25 % slower). The receiver does not need to know the size: it
    checks each chunk's offset and digest, whatever its length.
    """
    size = CHUNK_SIZE
    while size > MIN_CHUNK_SIZE and size * CHUNKS_PER_PAYLOAD > nbytes:
        size //= 2
    return size


Bytes = bytes | bytearray | memoryview

# Field keys of fedra.v1.Chunk: (field number << 3) | wire type (0 varint, 2 length-delimited, 5 fixed32).
_TASK: Final = (1 << 3) | 2
_REPLY: Final = (2 << 3) | 2
_OFFSET: Final = (3 << 3) | 0
_DATA: Final = (4 << 3) | 2
_CRC32: Final = (6 << 3) | 5


try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - a platform without an isal wheel: the same checksum, slower
    _crc32 = zlib.crc32


def crc32(data: Bytes) -> int:
    """The CRC-32 of ``data`` as the ``crc32`` field carries it: zlib's, computed by ISA-L (GIL released)."""
    return _crc32(data)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        byte = buf[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i + 1
        shift += 7
    raise DecodeError(f"chunk message: a varint at byte {pos} is truncated or longer than 10 bytes")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded ``Chunk`` message; ``data`` is a view into the message it came from."""

    offset: int
    data: memoryview
    crc32: int
    task: pb.TaskHeader | None = None
    reply: pb.ReplyHeader | None = None


def encode_chunk(*, offset: int = 0, data: Bytes = b"", checksum: int | None = None,
                 task: pb.TaskHeader | None = None, reply: pb.ReplyHeader | None = None) -> bytes:
    """The wire bytes of one ``Chunk`` message, as protobuf would write them, with one copy of ``data``.

    ``checksum`` defaults to the CRC-32 of ``data``; pass it when it was computed once for many sends.
    """
    view = memoryview(data).cast("B")
    value = crc32(view) if checksum is None else checksum
    parts: list[Bytes] = []
    if task is not None:
        head = task.SerializeToString()
        parts += [_varint(_TASK), _varint(len(head)), head]
    elif reply is not None:
        head = reply.SerializeToString()
        parts += [_varint(_REPLY), _varint(len(head)), head]
    if offset:  # proto3 leaves default values out
        parts += [_varint(_OFFSET), _varint(offset)]
    if view.nbytes:
        parts += [_varint(_DATA), _varint(view.nbytes), view]
    if value:  # proto3 leaves default values out
        parts += [_varint(_CRC32), value.to_bytes(4, "little")]
    return b"".join(parts)


def decode_chunk(message: Bytes) -> Frame:
    """Parse one ``Chunk`` message without copying its data; unknown fields are skipped.

    Raises
    ------
    DecodeError
        The bytes are not a well-formed ``Chunk`` message.
    """
    buf = memoryview(message).cast("B")
    end = len(buf)
    pos = offset = 0
    data: memoryview = buf[0:0]
    checksum = 0
    task: pb.TaskHeader | None = None
    reply: pb.ReplyHeader | None = None
    while pos < end:
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            if key == _OFFSET:
                offset = value
            continue
        if wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise DecodeError(f"chunk message: a field of {length:,} bytes at byte {pos} runs past its "
                                  f"end ({end:,} bytes)")
            field = buf[pos:pos + length]
            pos += length
            try:
                if key == _DATA:
                    data = field
                elif key == _TASK:
                    task, reply = pb.TaskHeader.FromString(bytes(field)), None
                elif key == _REPLY:
                    reply, task = pb.ReplyHeader.FromString(bytes(field)), None
            except Exception as exc:  # protobuf's DecodeError: a malformed header
                raise DecodeError(f"chunk message: its header does not parse: {exc}") from exc
            continue
        if wire in (1, 5):  # fixed 64 / 32 bits: the checksum, or unknown to this version and skipped
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise DecodeError("chunk message: a fixed-width field runs past its end")
            if key == _CRC32:
                checksum = int.from_bytes(buf[pos:pos + 4], "little")
            pos += width
            continue
        raise DecodeError(f"chunk message: expected wire type 0, 1, 2 or 5, got {wire} at byte {pos}")
    return Frame(offset=offset, data=data, crc32=checksum, task=task, reply=reply)


def chunks(payload: Bytes, *, task: pb.TaskHeader | None = None, reply: pb.ReplyHeader | None = None,
           size: int | None = None, checksums: Sequence[int] | None = None) -> Iterator[bytes]:
    """The encoded messages of one stream: a header chunk (``task`` or ``reply``), then the data chunks.

    An empty payload is the header chunk alone. ``size``: bytes per data chunk, by default
    :func:`chunk_size_for` the payload. ``checksums``: the data chunks' CRC-32, when computed once for
    many sends of the same payload (see :func:`chunk_checksums`; the same ``size`` on both calls).
    """
    view = memoryview(payload).cast("B")
    if size is None:
        size = chunk_size_for(view.nbytes)
    yield encode_chunk(task=task, reply=reply)
    for i, offset in enumerate(range(0, view.nbytes, size)):
        yield encode_chunk(offset=offset, data=view[offset:offset + size],
                           checksum=None if checksums is None else checksums[i])


def chunk_checksums(payload: Bytes, *, size: int | None = None) -> list[int]:
    """The CRC-32 of each data chunk :func:`chunks` cuts ``payload`` into (with the same ``size``)."""
    view = memoryview(payload).cast("B")
    if size is None:
        size = chunk_size_for(view.nbytes)
    return [crc32(view[o:o + size]) for o in range(0, view.nbytes, size)]


@final
class Assembler:
    """Rebuilds one payload from its chunks, checking size, order and checksums.

    The buffer is a numpy array (:attr:`array`), so an owner can tell when the last view of it is gone.
    """

    def __init__(self, declared_size: int, *, max_bytes: int) -> None:
        if declared_size > max_bytes:
            raise PayloadTooLarge(size=declared_size, limit=max_bytes, what="declared payload")
        # not bytearray(n): the buffer is written whole before it is read, so zero-filling it first would
        # be a wasted pass over the payload (it showed as the top cost in a profile); on huge pages where
        # it spans some, for fewer page faults (see empty_buffer)
        self.array = empty_buffer(declared_size)
        self._buf = self.array.data
        self._size = declared_size
        self._filled = 0

    def add(self, frame: Frame) -> None:
        data = frame.data
        if frame.offset != self._filled:
            raise DecodeError(f"payload stream: expected a chunk at offset {self._filled:,}, "
                              f"got one at {frame.offset:,}")
        if self._filled + len(data) > self._size:
            raise DecodeError(f"payload stream: chunks exceed the declared size of {self._size:,} bytes")
        if crc32(data) != frame.crc32:
            raise DecodeError(f"payload stream: the chunk at offset {frame.offset:,} does not match its "
                              "CRC-32; the data were corrupted in transit")
        self._buf[self._filled:self._filled + len(data)] = data
        self._filled += len(data)

    @property
    def complete(self) -> bool:
        return self._filled == self._size

    def result(self) -> memoryview:
        if not self.complete:
            raise DecodeError(f"payload stream ended early: expected {self._size:,} bytes, "
                              f"got {self._filled:,}")
        return self._buf
