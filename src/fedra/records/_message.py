"""The message envelope: named arrays plus config, metrics and envelope fields.

A :class:`Message` is what crosses every boundary (task to a client, reply to the server, checkpoint on
disk). Its encoding is the safetensors layout of :mod:`fedra.records._codec`, with the three small
dictionaries stored together as one JSON string under the metadata key ``fedra`` (empty ones left out).
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
    JSON_DECODER,
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
#: The one metadata key holding the envelope: ``{"config": {...}, "metrics": {...}, "meta": {...}}``.
_META_KEY: Final = "fedra"


_SCALAR_TYPES: Final = frozenset({bool, int, float, str})


def _check_scalars(where: str, values: Mapping[str, object], exc: type[Exception]) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for k, v in values.items():
        t = type(v)
        if type(k) is not str:
            raise exc(f"{where}: expected string keys, got {k!r}")
        if t not in _SCALAR_TYPES:
            if not isinstance(v, bool | int | float | str):  # subclasses (IntEnum, ...) are fine too
                raise exc(f"{where}[{k!r}]: expected bool, int, float or str, got {t.__name__}")
        elif t is float and not math.isfinite(v):  # type: ignore[arg-type]
            raise exc(f"{where}[{k!r}]: expected a finite number, got {v}")
        out[k] = v  # type: ignore[assignment]
    return out


@dataclass(frozen=True, slots=True)
class Message:
    """Named arrays with config (sent with a task), metrics (sent back) and envelope fields."""

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    config: Mapping[str, Scalar] = field(default_factory=dict)
    metrics: Mapping[str, Scalar] = field(default_factory=dict)
    meta: Mapping[str, Scalar] = field(default_factory=dict)


def encode_message(msg: Message) -> memoryview:
    """Encode ``msg``; raises ``TypeError``/``ValueError`` for values JSON cannot carry exactly."""
    envelope = {key: _check_scalars(key, values, ValueError)
                for key in _KEYS if (values := getattr(msg, key))}
    return encode_arrays(msg.arrays, {_META_KEY: json.dumps(envelope, separators=(",", ":"), allow_nan=False)})


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
    try:
        envelope = JSON_DECODER.decode(metadata.get(_META_KEY, "{}"))
    except ValueError as exc:
        raise DecodeError(f"{what}: metadata {_META_KEY!r} is not valid JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise DecodeError(f"{what}: metadata {_META_KEY!r}: expected a JSON object, got {type(envelope).__name__}")
    parts: dict[str, dict[str, Scalar]] = {}
    for key in _KEYS:
        obj = envelope.get(key, {})
        if not isinstance(obj, dict):
            raise DecodeError(f"{what}: {key}: expected a JSON object, got {type(obj).__name__}")
        parts[key] = _check_scalars(f"{what}.{key}", obj, DecodeError)
    if spec is not None:
        check_schema(arrays, spec, what=what)
    if require_finite:
        check_finite(arrays)
    return Message(arrays=arrays, config=parts["config"], metrics=parts["metrics"], meta=parts["meta"])
