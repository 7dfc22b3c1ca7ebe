"""Records: named arrays, config and metrics, and their safe binary encoding.

No pickle anywhere: payloads use the safetensors layout and decode to zero-copy numpy views. This layer
imports nothing of fedra's but :mod:`fedra.errors`.
"""

from fedra.records._codec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DTYPES,
    ArraySpec,
    check_finite,
    check_schema,
    decode_arrays,
    empty_buffer,
    encode_arrays,
)
from fedra.records._message import Message, Scalar, decode_message, encode_message

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DTYPES",
    "ArraySpec",
    "Message",
    "Scalar",
    "check_finite",
    "check_schema",
    "decode_arrays",
    "decode_message",
    "empty_buffer",
    "encode_arrays",
    "encode_message",
]
