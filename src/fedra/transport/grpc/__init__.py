"""The gRPC transport: the only place in fedra that imports grpc and protobuf.

Clients connect out to the server and pull their tasks (so NAT and outbound-only firewalls work);
payloads stream in CRC-32-checked chunks, encoded and decoded without protobuf's copies
(:func:`encode_chunk`, :func:`decode_chunk`). Mutual TLS from a federation directory: :func:`server_credentials`
and :func:`client_credentials` (or :meth:`GrpcConnector.mutual_tls`), with a :class:`fedra.pki.Authority`
given to :class:`GrpcTransport` to admit clients. Generated modules: ``fedra_pb2*`` (scripts/gen-proto).
"""

from fedra.address import check_address
from fedra.transport.grpc._chunks import (
    CHUNK_SIZE,
    MMAP_THRESHOLD,
    Assembler,
    Frame,
    chunks,
    decode_chunk,
    encode_chunk,
    trim_threshold_for,
)
from fedra.transport.grpc._client import GrpcConnector, PulledTask
from fedra.transport.grpc._server import CHANNEL_OPTIONS, GrpcTransport, read_buffer_cap_for
from fedra.transport.grpc._tls import client_credentials, server_credentials

__all__ = [
    "CHANNEL_OPTIONS",
    "CHUNK_SIZE",
    "MMAP_THRESHOLD",
    "Assembler",
    "Frame",
    "GrpcConnector",
    "GrpcTransport",
    "PulledTask",
    "check_address",
    "chunks",
    "client_credentials",
    "decode_chunk",
    "encode_chunk",
    "read_buffer_cap_for",
    "server_credentials",
    "trim_threshold_for",
]
