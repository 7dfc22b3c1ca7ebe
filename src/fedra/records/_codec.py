"""Binary encoding of records: the safetensors layout, decoded zero-copy.

Layout (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian header length N, N
bytes of UTF-8 JSON, then the raw little-endian array buffers. The JSON maps each array name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the header) and carries
a ``__metadata__`` object of string to string. fedra stores its config, metrics and envelope fields as JSON
strings in that metadata, so every payload fedra writes is also a valid ``.safetensors`` file.

Decoding never copies array data: each array is an ``np.frombuffer`` view of the input buffer (read-only
when the input is immutable). Buffers are written largest-alignment first so every view is aligned.
Nothing here unpickles or evaluates anything; JSON is parsed with NaN/Infinity rejected.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import struct
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from fedra.errors import DecodeError, NonFiniteValues, PayloadTooLarge, SchemaMismatch

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DTYPES",
    "ArraySpec",
    "check_finite",
    "check_schema",
    "decode_arrays",
    "empty_buffer",
    "encode_arrays",
]

#: Default upper bound on one decoded payload (4 GiB); callers pass their own for their model.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 4 << 30
#: Upper bound on the JSON header, so a hostile length field cannot make us allocate gigabytes.
MAX_HEADER_BYTES: Final = 100 << 20

#: safetensors dtype tag -> numpy dtype (always little-endian).
DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_TAGS: Final = {(dt.kind, dt.itemsize): tag for tag, dt in DTYPES.items()}
_LEN: Final = struct.Struct("<Q")


class ArraySpec:
    """The expected name, dtype and shape of every array of a model, in order."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> None:
        self._items = {name: (np.dtype(dt), tuple(shape)) for name, (dt, shape) in items.items()}

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> ArraySpec:
        """The spec that ``arrays`` satisfy."""
        return cls({name: (a.dtype, a.shape) for name, a in arrays.items()})

    def items(self) -> Any:
        return self._items.items()

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArraySpec) and self._items == other._items

    def __hash__(self) -> int:
        return hash(tuple((n, d.str, s) for n, (d, s) in self._items.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {d.name}{list(s)}" for n, (d, s) in self._items.items())
        return f"ArraySpec({inner})"

    @property
    def nbytes(self) -> int:
        return sum(d.itemsize * int(np.prod(s, dtype=np.int64)) for d, s in self._items.values())

    @property
    def num_parameters(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for _, s in self._items.values())


def _tag(name: str, dtype: np.dtype[Any]) -> str:
    tag = _TAGS.get((dtype.kind, dtype.itemsize)) if dtype.kind in "biuf" else None
    if tag is None:
        raise SchemaMismatch(
            f"array {name!r}: expected one of the dtypes {', '.join(d.name for d in DTYPES.values())}, "
            f"got {dtype}; convert it (e.g. to float32) before sending",
            name=name, expected=sorted(DTYPES), found=str(dtype),
        )
    return tag


def encode_arrays(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> memoryview:
    """Encode named arrays and string metadata in the safetensors layout: a writable byte view.

    Array order is kept (the header's JSON object order); buffers are laid out by descending item
    size so that every decoded view is aligned.
    """
    prepared: list[tuple[str, str, np.ndarray]] = []
    for name, arr in arrays.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise SchemaMismatch(f"array names must be non-empty strings other than '__metadata__', got {name!r}")
        a = np.asarray(arr)
        tag = _tag(name, a.dtype)
        if a.dtype.byteorder == ">" or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        prepared.append((name, tag, a))
    order = sorted(range(len(prepared)), key=lambda i: -prepared[i][2].dtype.itemsize)
    offsets: dict[int, tuple[int, int]] = {}
    pos = 0
    for i in order:
        n = prepared[i][2].nbytes
        offsets[i] = (pos, pos + n)
        pos += n
    header: dict[str, Any] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    for i, (name, tag, a) in enumerate(prepared):
        header[name] = {"dtype": tag, "shape": list(a.shape), "data_offsets": list(offsets[i])}
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    head += b" " * (-(len(head)) % 8)  # pad so the data section starts 8-byte aligned
    # Every byte below is written (length, header, then the arrays back to back), so the buffer need not
    # be zeroed first: bytearray(n) would zero it, a whole extra pass, on small pages. bench/bench_network.py,
    # alternating runs: 1 client x 400 MB, 2.20 s per round against 2.57; 10 clients x 40 MB, ~5 % faster.
    view = empty_buffer(_LEN.size + len(head) + pos).data
    _LEN.pack_into(view, 0, len(head))
    start = _LEN.size + len(head)
    view[_LEN.size:start] = head
    for i in order:
        b, e = offsets[i]
        a = prepared[i][2]
        if a.nbytes:
            view[start + b:start + e] = a.reshape(-1).view(np.uint8).data
    return view


#: The size of a transparent huge page on x86-64 and arm64 (4 KiB pages).
_HUGE_PAGE: Final = 2 << 20


def empty_buffer(nbytes: int) -> np.ndarray[tuple[int], np.dtype[np.uint8]]:
    """An uninitialised, writable uint8 array of ``nbytes``, on transparent huge pages where it spans some.

    Payload buffers are written once, end to end, as soon as they are made, so their cost is the kernel's
    page faults: one per 4 KiB page, 1,000 for a 4 MB model. numpy asks for huge pages only for 4 MiB
    and more, and glibc maps a large block wherever it fits, so even then only the 2 MiB-aligned part
    could use them. Here a buffer of 2 MiB or more gets a mapping of its own, starts on a 2 MiB boundary
    and is advised ``MADV_HUGEPAGE`` up to its last whole huge page (the tail stays on small pages, so
    it holds no more memory than its size); the mapping is returned to the kernel with its last view.
    Smaller buffers come from numpy as usual.
    """
    if nbytes < _HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(nbytes, np.uint8)
    # anonymous and private (mmap.mmap(-1, n) alone is shared memory, which gets no huge pages); unmapped
    # when the last view of it goes
    area = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE)
    whole = np.frombuffer(area, np.uint8)
    start = -whole.ctypes.data % _HUGE_PAGE  # a multiple of the small page size: mmap returns whole pages
    with contextlib.suppress(OSError):  # a kernel without transparent huge pages: small pages, as before
        area.madvise(mmap.MADV_HUGEPAGE, start, nbytes // _HUGE_PAGE * _HUGE_PAGE)
    return whole[start:start + nbytes]


def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-finite number {value} in JSON")


#: One decoder for every header (``json.loads`` with options builds a new decoder per call).
JSON_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def decode_arrays(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode a payload into zero-copy array views and its string metadata.

    Raises
    ------
    PayloadTooLarge
        ``data`` is longer than ``max_bytes``.
    DecodeError
        ``data`` is truncated, its header is not valid JSON of the expected shape, or the offsets do not
        tile the data section exactly.
    """
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    size = buf.nbytes
    if size > max_bytes:
        raise PayloadTooLarge(size=size, limit=max_bytes)
    if size < _LEN.size:
        raise DecodeError(f"truncated payload: expected at least {_LEN.size} bytes of header length, got {size}")
    (hlen,) = _LEN.unpack_from(buf, 0)
    if hlen > MAX_HEADER_BYTES:
        raise DecodeError(f"payload header length {hlen:,} exceeds the limit of {MAX_HEADER_BYTES:,} bytes")
    start = _LEN.size + hlen
    if start > size:
        raise DecodeError(f"truncated payload: header says {hlen:,} header bytes, only {size - _LEN.size:,} present")
    try:
        header = JSON_DECODER.decode(bytes(buf[_LEN.size:start]).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"payload header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise DecodeError(f"payload header: expected a JSON object, got {type(header).__name__}")
    raw_meta = header.pop("__metadata__", {})
    if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
        raise DecodeError("payload header: '__metadata__' must map strings to strings")
    data_len = size - start
    arrays: dict[str, np.ndarray] = {}
    spans: list[tuple[int, int]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise DecodeError(f"array {name!r}: expected an object with dtype, shape and data_offsets")
        tag, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if tag not in DTYPES:
            raise DecodeError(f"array {name!r}: expected a dtype among {sorted(DTYPES)}, got {tag!r}")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise DecodeError(f"array {name!r}: expected a shape of non-negative integers, got {shape!r}")
        if type(offs) is not list or len(offs) != 2 or type(offs[0]) is not int or type(offs[1]) is not int:
            raise DecodeError(f"array {name!r}: expected data_offsets [begin, end], got {offs!r}")
        b, e = offs
        dtype = DTYPES[tag]
        count = 1
        for d in shape:
            count *= d
        if not 0 <= b <= e or e - b != count * dtype.itemsize:
            raise DecodeError(
                f"array {name!r}: expected {count * dtype.itemsize:,} bytes for {tag}{shape}, "
                f"data_offsets {offs} give {e - b:,}"
            )
        if e > data_len:
            raise DecodeError(
                f"truncated payload: array {name!r} ends at byte {e:,} of the data section, "
                f"which has only {data_len:,} bytes"
            )
        spans.append((b, e))
        arrays[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=start + b).reshape(shape)
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise DecodeError(f"payload data section: arrays overlap or leave a hole at byte {min(b, pos):,}")
        pos = e
    if pos != data_len:
        raise DecodeError(f"payload data section: expected {pos:,} bytes after the header, got {data_len:,}")
    return arrays, dict(raw_meta)


def check_schema(arrays: Mapping[str, np.ndarray], spec: ArraySpec, *, what: str = "update") -> None:
    """Raise :class:`SchemaMismatch` unless ``arrays`` has exactly the names, dtypes and shapes of ``spec``."""
    missing = [n for n, _ in spec.items() if n not in arrays]
    expected_names = {n for n, _ in spec.items()}
    extra = [n for n in arrays if n not in expected_names]
    if missing or extra:
        raise SchemaMismatch(
            f"{what}: expected the model's {len(spec)} arrays; missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}; client and server must run the same model",
            expected=sorted(expected_names), found=sorted(arrays),
        )
    for name, (dtype, shape) in spec.items():
        a = arrays[name]
        if a.dtype != dtype:
            raise SchemaMismatch(
                f"{what}: array {name!r}: expected dtype {dtype}, got {a.dtype}",
                name=name, expected=str(dtype), found=str(a.dtype),
            )
        if a.shape != shape:
            raise SchemaMismatch(
                f"{what}: array {name!r}: expected shape {list(shape)}, got {list(a.shape)}",
                name=name, expected=shape, found=a.shape,
            )


def check_finite(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`NonFiniteValues` if any floating array holds NaN or Inf."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and a.size:
            # One pass, no temporary: NaN and Inf propagate into the sum. It runs in the array's own dtype
            # (float16 in float32), with no cast pass: the float64 cast was most of this check's cost in a
            # profile of a networked server. A sum of finite values can overflow too, so an infinite sum
            # is only a hint, settled by the exact count.
            with np.errstate(over="ignore", invalid="ignore"):
                total = np.add.reduce(a, axis=None, dtype=np.float32 if a.dtype.itemsize < 4 else a.dtype)
            if not math.isfinite(total):
                bad = int(a.size - np.count_nonzero(np.isfinite(a)))
                if bad:
                    raise NonFiniteValues(name=name, count=bad, size=int(a.size))
