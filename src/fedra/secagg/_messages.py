"""The messages of the SecAgg+ protocol, and their byte encoding (JSON header plus raw vector, no pickle).

Every message carries a :class:`Header`: the round id, the :class:`Stage` it belongs to, the sender, the
recipient and a sequence number (the message's position in its direction between that client and the
server: a client sends 0, 1, 2, 3; the server sends it 0, 1, 2). The state machines check all five on
every message, so a message replayed, reordered, misdirected or carried over from another round is
refused with a :class:`~fedra.secagg.ProtocolViolation`. The channel between a client and the server is
authenticated by the transport (mutual TLS); what clients send each other through the server is
encrypted and authenticated end to end (AES-GCM, with the header fields as associated data).

Wire format: ``b"FSA1"``, a little-endian ``uint32`` header length, a UTF-8 JSON object (bytes fields in
base64), then, for :class:`MaskedInput` only, the vector's raw little-endian bytes. Decoding checks every
field's type and every length and raises :class:`~fedra.errors.DecodeError` for anything else.

Stages (Bonawitz et al. 2017, Figure 4, with Bell et al. 2020's neighbourhoods)::

    ADVERTISE_KEYS  client -> server  AdvertiseKeys    two X25519 public keys (c: encryption, s: masks)
    SHARE_KEYS      server -> client  KeysBroadcast    the live neighbours' public keys
                    client -> server  ShareKeys        encrypted Shamir shares of s_sk and b, per holder
    MASKED_INPUT    server -> client  RelayedShares    the shares addressed to this client
                    client -> server  MaskedInput      y = x + PRG(b) + sum_v +-PRG(s_uv)  (mod 2^k)
    UNMASK          server -> client  UnmaskRequest    which neighbours survived and which dropped
                    client -> server  UnmaskShares     shares of b for survivors, of s_sk for the dropped
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias

import numpy as np

from fedra.errors import DecodeError

__all__ = ["SERVER_ID", "AdvertiseKeys", "Header", "KeysBroadcast", "MaskedInput", "Message",
           "RelayedShares", "ShareKeys", "Stage", "UnmaskRequest", "UnmaskShares", "decode_message",
           "encode_message"]

#: The server's name in headers; client ids are non-empty, so they never collide with it.
SERVER_ID = ""
_MAGIC = b"FSA1"
_VECTOR_DTYPES = ("<u4", "<u8")


class Stage(IntEnum):
    """The protocol's stages, in order; a message belongs to the stage whose work it starts or carries."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    UNMASK = 3


@dataclass(frozen=True)
class Header:
    """Who sent a message to whom, in which round and stage, and its position in that direction."""

    round_id: str
    stage: Stage
    sender: str
    recipient: str
    seq: int

    def associated_data(self) -> bytes:
        """The header as bytes, bound into the AES-GCM tag of what clients encrypt for each other."""
        return json.dumps([self.round_id, int(self.stage), self.sender, self.recipient],
                          separators=(",", ":")).encode()


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client to server: the client's two public keys."""

    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    header: Header
    cipher_public: bytes
    mask_public: bytes


@dataclass(frozen=True)
class KeysBroadcast:
    """Stage 1, server to client: ``{client: (cipher_public, mask_public)}`` of its live holders."""

    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    header: Header
    keys: Mapping[str, tuple[bytes, bytes]]


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, client to server: ``{holder: AES-GCM ciphertext of the holder's two shares}``."""

    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    header: Header
    ciphertexts: Mapping[str, bytes]


@dataclass(frozen=True)
class RelayedShares:
    """Stage 2, server to client: ``{sender: ciphertext}`` of the shares addressed to this client."""

    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    header: Header
    ciphertexts: Mapping[str, bytes]


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client to server: the masked, quantized update, a 1-d ``uint32``/``uint64`` vector."""

    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    header: Header
    masked: np.ndarray


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, server to client: which of its neighbours (itself included) survived, which dropped."""

    STAGE: ClassVar[Stage] = Stage.UNMASK
    header: Header
    alive: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class UnmaskShares:
    """Stage 3, client to server: shares of b for survivors and of s_sk for the dropped, by owner."""

    STAGE: ClassVar[Stage] = Stage.UNMASK
    header: Header
    self_mask_shares: Mapping[str, bytes]
    key_shares: Mapping[str, bytes]


Message: TypeAlias = (AdvertiseKeys | KeysBroadcast | ShareKeys | RelayedShares | MaskedInput
                      | UnmaskRequest | UnmaskShares)
_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    AdvertiseKeys, KeysBroadcast, ShareKeys, RelayedShares, MaskedInput, UnmaskRequest, UnmaskShares)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_message(message: Message) -> bytes:
    """``message`` as bytes (see the module docstring for the layout)."""
    h = message.header
    doc: dict[str, Any] = {"type": type(message).__name__, "round_id": h.round_id, "stage": int(h.stage),
                           "sender": h.sender, "recipient": h.recipient, "seq": h.seq}
    payload = b""
    if isinstance(message, AdvertiseKeys):
        doc["cipher_public"] = _b64(message.cipher_public)
        doc["mask_public"] = _b64(message.mask_public)
    elif isinstance(message, KeysBroadcast):
        doc["keys"] = {k: [_b64(c), _b64(s)] for k, (c, s) in message.keys.items()}
    elif isinstance(message, ShareKeys | RelayedShares):
        doc["ciphertexts"] = {k: _b64(v) for k, v in message.ciphertexts.items()}
    elif isinstance(message, MaskedInput):
        vector = np.ascontiguousarray(message.masked)
        dtype = vector.dtype.newbyteorder("<")
        doc["dtype"] = dtype.str
        doc["size"] = int(vector.size)
        payload = vector.astype(dtype, copy=False).tobytes()
    elif isinstance(message, UnmaskRequest):
        doc["alive"] = list(message.alive)
        doc["dropped"] = list(message.dropped)
    else:
        doc["self_mask_shares"] = {k: _b64(v) for k, v in message.self_mask_shares.items()}
        doc["key_shares"] = {k: _b64(v) for k, v in message.key_shares.items()}
    head = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return _MAGIC + struct.pack("<I", len(head)) + head + payload


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(f"secagg message: expected field {name!r} of type {kind.__name__}, "
                          f"got {type(value).__name__}")
    return value


def _unb64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise DecodeError(f"secagg message: expected base64 text in {name!r}, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise DecodeError(f"secagg message: {name!r} is not valid base64") from exc


def _bytes_map(doc: dict[str, Any], name: str) -> dict[str, bytes]:
    return {str(k): _unb64(v, name) for k, v in _field(doc, name, dict).items()}


def _names(doc: dict[str, Any], name: str) -> tuple[str, ...]:
    items = _field(doc, name, list)
    if not all(isinstance(i, str) for i in items):
        raise DecodeError(f"secagg message: expected a list of client ids in {name!r}")
    return tuple(items)


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Inverse of :func:`encode_message`; raises :class:`~fedra.errors.DecodeError` on malformed bytes."""
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != _MAGIC:
        raise DecodeError("secagg message: expected the FSA1 magic and a header length, got other bytes")
    (length,) = struct.unpack("<I", view[4:8])
    if 8 + length > len(view):
        raise DecodeError(f"secagg message: header of {length} bytes runs past the {len(view)}-byte message")
    try:
        doc = json.loads(bytes(view[8:8 + length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"secagg message: the header is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise DecodeError("secagg message: expected a JSON object as header")
    cls = _TYPES.get(doc.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise DecodeError(f"secagg message: expected a type in {sorted(_TYPES)}, got {doc.get('type')!r}")
    stage = _field(doc, "stage", int)
    if stage != cls.STAGE:
        raise DecodeError(f"secagg message: {cls.__name__} belongs to stage {int(cls.STAGE)}, got {stage}")
    header = Header(round_id=_field(doc, "round_id", str), stage=Stage(stage),
                    sender=_field(doc, "sender", str), recipient=_field(doc, "recipient", str),
                    seq=_field(doc, "seq", int))
    payload = view[8 + length:]
    if cls is not MaskedInput and len(payload):
        raise DecodeError(f"secagg message: {cls.__name__} carries no vector, got {len(payload)} more bytes")
    message: Message
    if cls is AdvertiseKeys:
        message = AdvertiseKeys(header, _unb64(doc.get("cipher_public"), "cipher_public"),
                                _unb64(doc.get("mask_public"), "mask_public"))
    elif cls is KeysBroadcast:
        keys: dict[str, tuple[bytes, bytes]] = {}
        for k, pair in _field(doc, "keys", dict).items():
            if not isinstance(pair, list) or len(pair) != 2:
                raise DecodeError("secagg message: expected [cipher_public, mask_public] per client in 'keys'")
            keys[str(k)] = (_unb64(pair[0], "keys"), _unb64(pair[1], "keys"))
        message = KeysBroadcast(header, keys)
    elif cls is ShareKeys or cls is RelayedShares:
        message = cls(header, _bytes_map(doc, "ciphertexts"))
    elif cls is MaskedInput:
        dtype, size = _field(doc, "dtype", str), _field(doc, "size", int)
        if dtype not in _VECTOR_DTYPES or size < 0:
            raise DecodeError(f"secagg message: expected a vector of dtype in {_VECTOR_DTYPES}, got "
                              f"{dtype!r} x {size}")
        if len(payload) != size * np.dtype(dtype).itemsize:
            raise DecodeError(f"secagg message: expected {size} x {dtype} = "
                              f"{size * np.dtype(dtype).itemsize} bytes of vector, got {len(payload)}")
        message = MaskedInput(header, np.frombuffer(payload, dtype=dtype))
    elif cls is UnmaskRequest:
        message = UnmaskRequest(header, _names(doc, "alive"), _names(doc, "dropped"))
    else:
        message = UnmaskShares(header, _bytes_map(doc, "self_mask_shares"), _bytes_map(doc, "key_shares"))
    return message
