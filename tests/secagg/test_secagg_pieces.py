"""Tests of the cryptographic and numeric pieces of SecAgg+: Shamir sharing, the PRG, quantization, the
graph and the message encoding. Properties from Shamir (1979), Bonawitz et al. (2017) and Bell et al. (2020)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from fedra.errors import DecodeError
from fedra.secagg import (
    PRIME,
    AdvertiseKeys,
    Header,
    KeysBroadcast,
    MaskBuffer,
    MaskedInput,
    RelayedShares,
    SecAggConfig,
    SecAggError,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskShares,
    check_parameters,
    decode_message,
    default_parameters,
    dequantize_sum,
    encode_message,
    neighbourhoods,
    prg_mask,
    quantization_levels,
    quantize,
    reconstruct,
    share,
)
from fedra.secagg._shamir import _interpolate

# --- Shamir -------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(1, 25), data=st.data())
def test_any_t_shares_reconstruct_the_secret(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    shares = share(secret, xs=xs, threshold=t)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert reconstruct({x: shares[x] for x in subset}, threshold=t) == secret


@settings(max_examples=30, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), t=st.integers(2, 12))
def test_t_minus_one_shares_do_not_give_the_secret(secret: bytes, t: int) -> None:
    shares = share(secret, xs=range(1, t + 2), threshold=t)
    fewer = dict(list(shares.items())[: t - 1])
    with pytest.raises(SecAggError, match="at least t"):
        reconstruct(fewer, threshold=t)
    # interpolating t - 1 points anyway gives another value (the secret only with probability 1/p)
    assert _interpolate(sorted(fewer.items()), 0) != int.from_bytes(secret, "big")


def test_shares_of_the_same_secret_differ_between_sharings() -> None:
    secret = bytes(range(32))
    first, second = share(secret, xs=[1, 2, 3], threshold=2), share(secret, xs=[1, 2, 3], threshold=2)
    assert first != second
    assert all(0 <= v < PRIME for v in first.values())


def test_a_corrupted_share_among_more_than_t_is_detected() -> None:
    shares = share(os.urandom(32), xs=range(1, 8), threshold=4)
    shares[5] = (shares[5] + 1) % PRIME
    with pytest.raises(SecAggError, match="inconsistent"):
        reconstruct(shares, threshold=4)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"xs": [1, 1, 2], "threshold": 2}, "distinct"),
    ({"xs": [0, 1, 2], "threshold": 2}, "distinct"),
    ({"xs": [1, 2], "threshold": 3}, "threshold"),
])
def test_share_refuses_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SecAggError, match=match):
        share(bytes(32), **kwargs)  # type: ignore[arg-type]


# --- PRG ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ring_bits", [32, 64])
def test_prg_is_the_aes_ctr_keystream_and_ignores_numpy_state(ring_bits: int) -> None:
    seed = bytes(range(32))
    np.random.seed(1)
    first = prg_mask(seed, size=1001, ring_bits=ring_bits)
    np.random.seed(2)
    np.random.random(100)
    second = prg_mask(seed, size=1001, ring_bits=ring_bits)
    assert np.array_equal(first, second)
    width = ring_bits // 8
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(1001 * width))
    assert first.tobytes() == stream
    assert first.dtype == np.dtype(f"<u{width}")


def test_prg_prefixes_agree_and_seeds_differ() -> None:
    a = prg_mask(b"a" * 32, size=5000)
    assert np.array_equal(prg_mask(b"a" * 32, size=17), a[:17])
    b = prg_mask(b"b" * 32, size=5000)
    assert np.mean(a == b) < 0.01
    # uniform on Z_2^32: each bit set about half the time (5000 x 32 bits, 6 sigma bound)
    bits = np.unpackbits(a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 6 * 0.5 / np.sqrt(bits.size)


def test_mask_buffer_reuses_memory_and_gives_the_same_masks() -> None:
    buffer = MaskBuffer(size=300, ring_bits=32)
    first = buffer.mask(b"x" * 32).copy()
    buffer.mask(b"y" * 32)
    assert np.array_equal(buffer.mask(b"x" * 32), first)
    assert np.array_equal(first, prg_mask(b"x" * 32, size=300))
    with pytest.raises(SecAggError, match="32 bytes"):
        buffer.mask(b"short")


# --- quantization -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ring_bits", [32, 64])
@pytest.mark.parametrize("clients", [2, 7, 1000])
def test_extreme_inputs_of_max_clients_never_overflow(ring_bits: int, clients: int) -> None:
    dtype = np.dtype(f"<u{ring_bits // 8}")
    for value in (5.0, -5.0, 1.0, -1.0):
        q = quantize(np.full(3, value), clip=1.0, ring_bits=ring_bits, max_clients=clients)
        total = np.zeros(3, dtype)
        for _ in range(clients):
            total += q
        back = dequantize_sum(total, clip=1.0, ring_bits=ring_bits, max_clients=clients)
        assert np.allclose(back, np.sign(value) * clients, rtol=1e-9)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(-10, 10), min_size=1, max_size=50), clip=st.floats(0.01, 5))
def test_quantization_error_is_at_most_half_a_step(values: list[float], clip: float) -> None:
    x = np.array(values)
    q = quantize(x, clip=clip, max_clients=10)
    step = clip / quantization_levels(ring_bits=32, max_clients=10)
    back = dequantize_sum(q, clip=clip, max_clients=10)
    assert np.all(np.abs(back - np.clip(x, -clip, clip)) <= step / 2 + 1e-12)


def test_stochastic_rounding_is_unbiased_and_seeded() -> None:
    levels = quantization_levels(ring_bits=32, max_clients=2**30)  # 1 level: coarse enough to see
    assert levels == 1
    x = np.full(20000, 0.3)
    q = quantize(x, clip=1.0, max_clients=2**30, rng=np.random.default_rng(0))
    values = q.view(np.int32)
    assert set(np.unique(values)) == {0, 1}
    assert abs(values.mean() - 0.3) < 0.02
    again = quantize(x, clip=1.0, max_clients=2**30, rng=np.random.default_rng(0))
    assert np.array_equal(q, again)


def test_quantize_refuses_non_finite_values_and_bad_clip() -> None:
    with pytest.raises(SecAggError, match="finite"):
        quantize(np.array([np.nan]), clip=1.0, max_clients=3)
    with pytest.raises(SecAggError, match="clip"):
        quantize(np.array([1.0]), clip=0.0, max_clients=3)


# --- graph --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 10, 50, 200])
def test_harary_graph_is_symmetric_regular_and_seeded(n: int) -> None:
    clients = [f"c{i}" for i in range(n)]
    k, t = default_parameters(n)
    check_parameters(num_clients=n, degree=k, threshold=t)
    assert 2 * t > k + 1
    graph = neighbourhoods(clients, degree=k, seed=b"s" * 32)
    assert all(len(graph[u]) == k and u not in graph[u] for u in clients)
    assert all(u in graph[v] for u in clients for v in graph[u])
    assert graph == neighbourhoods(clients, degree=k, seed=b"s" * 32)
    if k < n - 1:
        assert graph != neighbourhoods(clients, degree=k, seed=b"t" * 32)
        assert k <= 2 * np.ceil(1.5 * np.log2(n))


def test_graph_parameters_are_checked() -> None:
    with pytest.raises(SecAggError, match="strict majority"):
        check_parameters(num_clients=10, degree=9, threshold=5)
    with pytest.raises(SecAggError, match="even"):
        check_parameters(num_clients=20, degree=7, threshold=5)
    with pytest.raises(SecAggError, match="at least 2"):
        check_parameters(num_clients=1, degree=1, threshold=1)


# --- messages -----------------------------------------------------------------------------------------


def _examples() -> list[object]:
    def h(stage: Stage, seq: int) -> Header:
        return Header("round-1", stage, "a", "", seq)

    return [
        AdvertiseKeys(h(Stage.ADVERTISE_KEYS, 0), b"c" * 32, b"s" * 32),
        KeysBroadcast(h(Stage.SHARE_KEYS, 0), {"a": (b"1" * 32, b"2" * 32), "b": (b"3" * 32, b"4" * 32)}),
        ShareKeys(h(Stage.SHARE_KEYS, 1), {"b": b"\x00\xff" * 40}),
        RelayedShares(h(Stage.MASKED_INPUT, 1), {"b": b"xyz"}),
        UnmaskRequest(h(Stage.UNMASK, 2), ("a", "b"), ("c",)),
        UnmaskShares(h(Stage.UNMASK, 3), {"a": b"1" * 33}, {"c": b"2" * 33}),
    ]


@pytest.mark.parametrize("message", _examples(), ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_bytes(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["<u4", "<u8"])
def test_masked_input_round_trips_exactly(dtype: str) -> None:
    vector = np.random.default_rng(0).integers(0, 2**32, size=777).astype(dtype)
    message = MaskedInput(Header("r", Stage.MASKED_INPUT, "a", "", 2), vector)
    back = decode_message(encode_message(message))
    assert isinstance(back, MaskedInput)
    assert back.header == message.header
    assert back.masked.dtype == np.dtype(dtype) and np.array_equal(back.masked, vector)


def test_malformed_messages_raise_decode_error() -> None:
    good = encode_message(MaskedInput(Header("r", Stage.MASKED_INPUT, "a", "", 2), np.zeros(4, np.uint32)))
    for bad in (b"", b"XXXX" + good[4:], good[:-1], good + b"\x00", good[:8] + b"[" + good[9:]):
        with pytest.raises(DecodeError):
            decode_message(bad)
    wrong_stage = encode_message(AdvertiseKeys(Header("r", Stage.UNMASK, "a", "", 0), b"", b""))
    with pytest.raises(DecodeError, match="stage"):
        decode_message(wrong_stage)


def test_config_validates_its_fields() -> None:
    clients = ("a", "b", "c")
    with pytest.raises(SecAggError, match="distinct"):
        SecAggConfig.create(round_id="r", clients=("a", "a", "b"), size=3, clip=1.0)
    with pytest.raises(SecAggError, match="graph_seed"):
        SecAggConfig.create(round_id="r", clients=clients, size=3, clip=1.0, graph_seed=b"x")
    with pytest.raises(SecAggError, match="ring_bits"):
        SecAggConfig.create(round_id="r", clients=clients, size=3, clip=1.0, ring_bits=16)
    config = SecAggConfig.create(round_id="r", clients=clients, size=3, clip=1.0)
    assert (config.degree, config.threshold) == (2, 2)
    assert [config.abscissa(c) for c in clients] == [1, 2, 3]


def test_config_round_trips_through_json() -> None:
    import json

    config = SecAggConfig.create(round_id="r", clients=("a", "b", "c", "d"), size=3, clip=0.5, ring_bits=64)
    again = SecAggConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.graph_seed == config.graph_seed
    with pytest.raises(SecAggError, match="fields"):
        SecAggConfig.from_dict({"round_id": "r"})
    with pytest.raises(SecAggError, match="'size' has the wrong type"):
        SecAggConfig.from_dict({**config.to_dict(), "size": "3"})


def test_ring_noise_is_whole_levels_added_mod_2k_and_the_sum_stays_exact() -> None:
    from fedra.secagg import add_ring_noise, rounding_sensitivity

    rng = np.random.default_rng(3)
    xs = [rng.uniform(-0.4, 0.4, 1000) for _ in range(4)]
    qs = [quantize(x, clip=1.0, max_clients=4) for x in xs]
    noised = [add_ring_noise(q, stddev=0.05, clip=1.0, max_clients=4, rng=np.random.default_rng(i))
              for i, q in enumerate(qs)]
    levels = quantization_levels(ring_bits=32, max_clients=4)
    # each share is a whole number of levels, drawn from N(0, (0.05 * L / clip)^2)
    shares = [n.view(np.int32).astype(np.int64) - q.view(np.int32).astype(np.int64) for n, q in zip(noised, qs,
                                                                                                    strict=True)]
    expect = [np.rint(np.random.default_rng(i).normal(0, 0.05 * levels, 1000)) for i in range(4)]
    for got, want in zip(shares, expect, strict=True):
        np.testing.assert_array_equal(got, want)
    total = np.zeros(1000, np.uint32)
    for n in noised:
        total += n  # the ring's sum, wrapping as uint32 does
    exact = sum(q.view(np.int32).astype(np.int64) for q in qs) + sum(expect)
    np.testing.assert_array_equal(total.view(np.int32).astype(np.int64), exact)
    np.testing.assert_allclose(dequantize_sum(total, clip=1.0, max_clients=4), exact / levels)
    # zero noise changes nothing; a bad stddev or dtype is refused
    assert add_ring_noise(qs[0], stddev=0.0, clip=1.0, max_clients=4, rng=rng) is qs[0]
    with pytest.raises(SecAggError, match="stddev"):
        add_ring_noise(qs[0], stddev=float("nan"), clip=1.0, max_clients=4, rng=rng)
    with pytest.raises(SecAggError, match="dtype"):
        add_ring_noise(qs[0].astype(np.uint64), stddev=1.0, clip=1.0, max_clients=4, rng=rng)
    # rounding grows an update's L2 norm by at most sqrt(d)/2 levels
    g = rounding_sensitivity(size=10_000, clip_norm=0.5, clip=1.0, max_clients=4)
    assert g == pytest.approx((0.5 * levels + 50) / (0.5 * levels))
