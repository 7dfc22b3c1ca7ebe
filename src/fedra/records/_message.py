"""The message envelope: named arrays plus config, metrics and envelope fields.

A :class:`Message` is what crosses every boundary (task to a client, reply to the server, checkpoint on
disk). Its encoding is the safetensors layout of :mod:`fedra.records._codec`, with the three small
dictionaries stored as JSON strings under the metadata keys ``fedra.config``, ``fedra.metrics`` and
``fedra.meta``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from fedra.errors import DecodeError
from fedra.records._codec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    ArraySpec,
    check_finite,
    check_schema,
    decode_arrays,
    encode_arrays,
)

__all__ = ["Message", "Scalar", "decode_message", "encode_message"]

#: A config or metric value: what JSON carries without loss.
Scalar = bool | int | float | str

_KEYS: Final = ("config", "metrics", "meta")


def _check_scalars(where: str, values: Mapping[str, object], exc: type[Exception]) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for k, v in values.items():
        if not isinstance(k, str):
            raise exc(f"{where}: expected string keys, got {k!r}")
        if not isinstance(v, bool | int | float | str):
            raise exc(f"{where}[{k!r}]: expected bool, int, float or str, got {type(v).__name__}")
        if isinstance(v, float) and not math.isfinite(v):
            raise exc(f"{where}[{k!r}]: expected a finite number, got {v}")
        out[k] = v
    return out


@dataclass(frozen=True, slots=True)
class Message:
    """Named arrays with config (sent with a task), metrics (sent back) and envelope fields."""

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    config: Mapping[str, Scalar] = field(default_factory=dict)
    metrics: Mapping[str, Scalar] = field(default_factory=dict)
    meta: Mapping[str, Scalar] = field(default_factory=dict)


def encode_message(msg: Message) -> bytearray:
    """Encode ``msg``; raises ``TypeError``/``ValueError`` for values JSON cannot carry exactly."""
    metadata = {
        f"fedra.{key}": json.dumps(_check_scalars(key, getattr(msg, key), ValueError),
                                   separators=(",", ":"), allow_nan=False)
        for key in _KEYS
    }
    return encode_arrays(msg.arrays, metadata)


def _reject_constant(value: str) -> object:
    raise ValueError(f"non-finite number {value}")


def decode_message(
    data: bytes | bytearray | memoryview,
    *,
    spec: ArraySpec | None = None,
    require_finite: bool = False,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    what: str = "message",
) -> Message:
    """Decode and validate a message. Array data are zero-copy views of ``data``.

    Parameters
    ----------
    spec
        When given, the arrays must match it exactly (names, dtypes, shapes): :class:`SchemaMismatch`.
    require_finite
        Reject NaN/Inf in floating arrays: :class:`NonFiniteValues`.
    max_bytes
        Reject larger payloads before parsing: :class:`PayloadTooLarge`.
    """
    arrays, metadata = decode_arrays(data, max_bytes=max_bytes)
    parts: dict[str, dict[str, Scalar]] = {}
    for key in _KEYS:
        raw = metadata.get(f"fedra.{key}", "{}")
        try:
            obj = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            raise DecodeError(f"{what}: metadata 'fedra.{key}' is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise DecodeError(f"{what}: metadata 'fedra.{key}': expected a JSON object, got {type(obj).__name__}")
        parts[key] = _check_scalars(f"{what}.{key}", obj, DecodeError)
    if spec is not None:
        check_schema(arrays, spec, what=what)
    if require_finite:
        check_finite(arrays)
    return Message(arrays=arrays, config=parts["config"], metrics=parts["metrics"], meta=parts["meta"])
