"""The record codec: round trips, zero-copy decoding, and a typed error for every kind of bad input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedra.errors import DecodeError, NonFiniteValues, PayloadTooLarge, RecordError, SchemaMismatch
from fedra.records import (
    DTYPES,
    ArraySpec,
    Message,
    check_finite,
    decode_arrays,
    decode_message,
    encode_arrays,
    encode_message,
)

ALL_DTYPES = sorted({dt.str for dt in DTYPES.values()})

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda s: s != "__metadata__")


@st.composite
def array_dicts(draw: st.DrawFn) -> dict[str, np.ndarray]:
    keys = draw(st.lists(names, min_size=0, max_size=5, unique=True))
    out = {}
    for k in keys:
        dtype = np.dtype(draw(st.sampled_from(ALL_DTYPES)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
        out[k] = draw(hnp.arrays(dtype, shape))
    return out


@settings(max_examples=200, deadline=None)
@given(array_dicts())
def test_round_trip_every_dtype_bit_exact(arrays: dict[str, np.ndarray]) -> None:
    data = encode_arrays(arrays, {"k": "v"})
    decoded, meta = decode_arrays(data)
    assert meta == {"k": "v"}
    assert list(decoded) == list(arrays), "array order is part of the record"
    for k, a in arrays.items():
        d = decoded[k]
        assert d.dtype == a.dtype and d.shape == a.shape
        # compare bytes, so NaN payloads and -0.0 count too
        assert d.tobytes() == np.ascontiguousarray(a).tobytes()


@settings(max_examples=50, deadline=None)
@given(array_dicts())
def test_output_is_a_valid_safetensors_file(arrays: dict[str, np.ndarray]) -> None:
    loaded = safetensors.numpy.load(bytes(encode_arrays(arrays)))
    assert set(loaded) == set(arrays)
    for k, a in arrays.items():
        assert loaded[k].tobytes() == np.ascontiguousarray(a).tobytes()


@settings(max_examples=50, deadline=None)
@given(array_dicts())
def test_every_byte_of_the_encoding_is_written(arrays: dict[str, np.ndarray]) -> None:
    # the encoder fills an uninitialised buffer: a byte it did not write would be whatever the allocator
    # handed back, here a freed block of the same size full of 0x00 or of 0xFF, and would leak old heap
    # contents onto the wire
    size = len(encode_arrays(arrays, {"k": "v"}))
    outs = []
    for fill in (0x00, 0xFF):
        dirty = np.full(size, fill, np.uint8)
        del dirty
        outs.append(bytes(encode_arrays(arrays, {"k": "v"})))
    assert outs[0] == outs[1]


def test_reads_files_written_by_safetensors() -> None:
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], dtype=np.int64)}
    data = safetensors.numpy.save(arrays, metadata={"x": "y"})
    decoded, meta = decode_arrays(data)
    assert meta == {"x": "y"}
    np.testing.assert_array_equal(decoded["w"], arrays["w"])
    np.testing.assert_array_equal(decoded["b"], arrays["b"])


def test_decoding_is_zero_copy_and_aligned() -> None:
    arrays = {"h": np.ones(3, np.float16), "d": np.arange(5, dtype=np.float64), "u": np.ones(7, np.uint8)}
    data = encode_arrays(arrays)
    decoded, _ = decode_arrays(data)
    base = np.frombuffer(data, dtype=np.uint8)
    for a in decoded.values():
        assert np.shares_memory(a, base), "decoded arrays must be views of the payload"
        assert a.flags.aligned
    ro, _ = decode_arrays(bytes(data))
    assert not ro["d"].flags.writeable, "views of immutable bytes are read-only"


def test_big_endian_and_non_contiguous_inputs_are_normalised() -> None:
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    b = np.arange(20, dtype=np.int32)[::2]
    decoded, _ = decode_arrays(encode_arrays({"a": a, "b": b}))
    assert decoded["a"].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(decoded["a"], a)
    np.testing.assert_array_equal(decoded["b"], b)


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype("U3"), np.dtype(object)])
def test_unsupported_dtype_is_rejected_on_encode(dtype: np.dtype) -> None:
    with pytest.raises(SchemaMismatch, match="expected one of the dtypes"):
        encode_arrays({"x": np.zeros(2, dtype=dtype)})


def _payload() -> bytearray:
    return encode_arrays({"w": np.arange(10, dtype=np.float32), "b": np.zeros(2, np.float64)})


@pytest.mark.parametrize("cut", [0, 3, 8, 20, -1, -9])
def test_truncated_payload_raises_decode_error(cut: int) -> None:
    data = bytes(_payload())
    with pytest.raises(DecodeError, match=r"truncated|expected"):
        decode_arrays(data[:cut])


def _with_header(header: object, data_len: int = 0) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"\0" * data_len


@pytest.mark.parametrize(
    ("header", "data_len", "match"),
    [
        ([1, 2], 0, "JSON object"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4, "expected 8 bytes"),
        ({"a": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, 4, "expected a dtype"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, "shape"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4]}}, 4, "data_offsets"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8, "expected 4 bytes after"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4, "overlap"),
        ({"__metadata__": {"k": 1}}, 0, "__metadata__"),
        ({"a": "x"}, 0, "expected an object"),
    ],
)
def test_malformed_headers_raise_decode_error(header: object, data_len: int, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_arrays(_with_header(header, data_len))


def test_header_length_bomb_is_rejected_without_allocating() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode_arrays(struct.pack("<Q", 1 << 60) + b"{}")


def test_non_json_header_and_nan_constants_are_rejected() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_arrays(struct.pack("<Q", 3) + b"{x}")
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_arrays(struct.pack("<Q", 9) + b'{"a":NaN}')


def test_oversized_payload_raises_before_parsing() -> None:
    data = _payload()
    with pytest.raises(PayloadTooLarge) as info:
        decode_arrays(data, max_bytes=len(data) - 1)
    assert info.value.size == len(data) and info.value.limit == len(data) - 1
    assert "expected at most" in str(info.value)


def test_schema_mismatch_names_what_was_expected_and_found() -> None:
    spec = ArraySpec.of({"w": np.zeros(10, np.float32), "b": np.zeros(2, np.float64)})
    ok = encode_message(Message(arrays={"w": np.zeros(10, np.float32), "b": np.zeros(2, np.float64)}))
    decode_message(ok, spec=spec)
    wrong_dtype = encode_message(Message(arrays={"w": np.zeros(10, np.float64), "b": np.zeros(2, np.float64)}))
    with pytest.raises(SchemaMismatch, match=r"'w': expected dtype float32, got float64") as info:
        decode_message(wrong_dtype, spec=spec)
    assert info.value.name == "w"
    wrong_shape = encode_message(Message(arrays={"w": np.zeros(11, np.float32), "b": np.zeros(2, np.float64)}))
    with pytest.raises(SchemaMismatch, match=r"expected shape \[10\], got \[11\]"):
        decode_message(wrong_shape, spec=spec)
    missing = encode_message(Message(arrays={"w": np.zeros(10, np.float32)}))
    with pytest.raises(SchemaMismatch, match=r"missing \['b'\]"):
        decode_message(missing, spec=spec)
    extra = encode_message(Message(arrays={"w": np.zeros(10, np.float32), "b": np.zeros(2), "z": np.zeros(1)}))
    with pytest.raises(SchemaMismatch, match=r"unexpected \['z'\]"):
        decode_message(extra, spec=spec)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_values_are_rejected_when_required(bad: float, dtype: type) -> None:
    a = np.zeros(100, dtype=dtype)
    a[37] = bad
    data = encode_message(Message(arrays={"w": a}))
    decode_message(data)  # allowed unless asked for
    with pytest.raises(NonFiniteValues, match="found 1 NaN/Inf of 100") as info:
        decode_message(data, require_finite=True)
    assert info.value.name == "w" and info.value.count == 1


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_large_finite_values_are_not_mistaken_for_inf(dtype: type) -> None:
    check_finite({"w": np.full(10, np.finfo(dtype).max, dtype=dtype)})  # their sum overflows; values are finite
    big = np.full(10, np.finfo(dtype).max, dtype=dtype)
    big[9] = np.inf
    with pytest.raises(NonFiniteValues, match="found 1 NaN/Inf of 10"):
        check_finite({"w": big})


def test_message_round_trip_and_scalar_validation() -> None:
    msg = Message(arrays={"w": np.ones(3, np.float32)}, config={"lr": 0.1, "name": "x", "flag": True, "n": 3},
                  metrics={"loss": 0.5}, meta={"round": 2})
    out = decode_message(encode_message(msg))
    assert out.config == msg.config and out.metrics == msg.metrics and out.meta == msg.meta
    assert type(out.config["n"]) is int and type(out.config["flag"]) is bool
    with pytest.raises(ValueError, match="finite"):
        encode_message(Message(metrics={"loss": float("nan")}))
    with pytest.raises(ValueError, match="expected bool, int, float or str"):
        encode_message(Message(config={"x": [1, 2]}))  # type: ignore[dict-item]


def test_message_with_hostile_metadata_is_rejected() -> None:
    data = encode_arrays({}, {"fedra": '{"config": {"x": [1]}}'})
    with pytest.raises(DecodeError, match="expected bool, int, float or str"):
        decode_message(data)
    for bad in ("[]", '{"meta": []}'):
        with pytest.raises(DecodeError, match="expected a JSON object"):
            decode_message(encode_arrays({}, {"fedra": bad}))
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_message(encode_arrays({}, {"fedra": '{"metrics": {"a": NaN}}'}))


def test_every_record_error_is_a_fedra_error() -> None:
    from fedra.errors import FedraError

    for exc in (DecodeError, PayloadTooLarge, SchemaMismatch, NonFiniteValues):
        assert issubclass(exc, RecordError) and issubclass(exc, FedraError)
