"""Tests of the SecAgg+ protocol run end to end through its state machines.

From Bonawitz et al. (2017), Theorems 6.2-6.3 (correctness with up to n - t dropouts, privacy against the
server) and Bell et al. (2020), Section 3: the unmasked sum is exactly the sum of the survivors' quantized
updates; dropouts at any stage are tolerated while t holders survive, and the round aborts with no output
otherwise; the server never holds an individual unmasked update; clients refuse instructions no correct
server sends; replayed, reordered or foreign messages are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedra.errors import FedraError
from fedra.secagg import (
    AdvertiseKeys,
    ClientProtocol,
    Header,
    KeysBroadcast,
    MaskedInput,
    Message,
    ProtocolViolation,
    RelayedShares,
    SecAggAborted,
    SecAggConfig,
    SecAggError,
    SecAggResult,
    SeededRandomBytes,
    ServerProtocol,
    ShareKeys,
    Stage,
    UnmaskRequest,
    prg_mask,
    quantize,
    run_secagg_round,
)

CLIP = 2.0


def make_round(n: int, size: int, *, seed: int = 0, degree: int | None = None, threshold: int | None = None,
               ring_bits: int = 32, round_id: str = "round-1") -> tuple[SecAggConfig, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    clients = [f"client-{i:02d}" for i in range(n)]
    config = SecAggConfig.create(round_id=round_id, clients=clients, size=size, clip=CLIP, degree=degree,
                                 threshold=threshold, graph_seed=rng.bytes(32), ring_bits=ring_bits)
    updates = {c: rng.normal(scale=1.5, size=size) for c in clients}  # some values beyond the clip
    return config, updates


def plain_ring_sum(config: SecAggConfig, updates: dict[str, np.ndarray], who: Sequence[str]) -> np.ndarray:
    total = np.zeros(config.size, config.dtype())
    for c in who:
        total += quantize(updates[c], clip=config.clip, ring_bits=config.ring_bits,
                          max_clients=len(config.clients))
    return total


def assert_exact(result: SecAggResult, config: SecAggConfig, updates: dict[str, np.ndarray],
                 survivors: Sequence[str]) -> None:
    assert result.survivors == tuple(survivors)
    assert result.ring_sum.dtype == config.dtype()
    assert np.array_equal(result.ring_sum, plain_ring_sum(config, updates, survivors))
    clipped = sum(np.clip(updates[c], -CLIP, CLIP) for c in survivors)
    step = config.clip * len(config.clients) / 2 ** (config.ring_bits - 1)
    assert np.allclose(result.total, clipped, atol=len(survivors) * step)


# --- correctness --------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 40), size=st.integers(1, 5000), seed=st.integers(0, 2**32 - 1),
       ring_bits=st.sampled_from([32, 64]))
def test_unmasked_sum_equals_plain_sum_of_quantized_updates(n: int, size: int, seed: int,
                                                            ring_bits: int) -> None:
    config, updates = make_round(n, size, seed=seed, ring_bits=ring_bits)
    result = run_secagg_round(updates, config=config, rng_seed=seed)
    assert_exact(result, config, updates, config.clients)
    assert result.dropped == ()


def test_stochastic_rounding_round_is_exact_for_the_values_it_quantized() -> None:
    config, updates = make_round(7, 300)
    result = run_secagg_round(updates, config=config, rng_seed=3, stochastic_rounding=True)
    expected = np.zeros(300, np.uint32)
    for i, c in enumerate(config.clients):
        expected += quantize(updates[c], clip=CLIP, max_clients=7, rng=np.random.default_rng([3, i]))
    assert np.array_equal(result.ring_sum, expected)


def test_masked_inputs_look_nothing_like_the_updates() -> None:
    config, updates = make_round(5, 2000)
    seen: list[np.ndarray] = []

    def spy(message: Message) -> list[Message]:
        if isinstance(message, MaskedInput):
            seen.append(message.masked.copy())
        return [message]

    run_secagg_round(updates, config=config, rng_seed=1, intercept=spy)
    assert len(seen) == 5
    for vector, c in zip(seen, config.clients, strict=True):
        q = quantize(updates[c], clip=CLIP, max_clients=5)
        assert np.mean(vector == q) < 0.01


# --- dropouts -----------------------------------------------------------------------------------------

N, T = 9, 5  # complete graph (k = 8, 9 holders), the smallest strict majority: n - t = 4 dropouts


@pytest.mark.parametrize("count", [1, N - T])
@pytest.mark.parametrize("stage", list(Stage))
def test_up_to_n_minus_t_dropouts_at_each_stage_are_tolerated(stage: Stage, count: int) -> None:
    config, updates = make_round(N, 257, degree=N - 1, threshold=T)
    dropped = set(config.clients[1:1 + count])
    result = run_secagg_round(updates, config=config, rng_seed=2, drop_at={stage: dropped})
    # a client that dropped before sending its masked input is not in the sum; one that dropped
    # afterwards is (its self-mask is removed with its neighbours' shares)
    survivors = config.clients if stage is Stage.UNMASK else [c for c in config.clients if c not in dropped]
    assert_exact(result, config, updates, survivors)


def test_dropouts_spread_over_all_stages_are_tolerated() -> None:
    config, updates = make_round(N, 100, degree=N - 1, threshold=T)
    c = config.clients
    drop_at = {Stage.ADVERTISE_KEYS: {c[0]}, Stage.SHARE_KEYS: {c[3]}, Stage.MASKED_INPUT: {c[5]},
               Stage.UNMASK: {c[8]}}
    result = run_secagg_round(updates, config=config, rng_seed=4, drop_at=drop_at)
    assert_exact(result, config, updates, [x for x in c if x not in {c[0], c[3], c[5]}])
    assert result.dropped == (c[0], c[3], c[5])


@pytest.mark.parametrize("stage", list(Stage))
def test_n_minus_t_plus_one_dropouts_abort_with_no_output(stage: Stage) -> None:
    config, updates = make_round(N, 64, degree=N - 1, threshold=T)
    server = ServerProtocol(config)
    with pytest.raises(SecAggAborted, match="aborted") as info:
        run_secagg_round(updates, config=config, rng_seed=2, server=server,
                         drop_at={stage: set(config.clients[:N - T + 1])})
    assert isinstance(info.value, FedraError)
    assert server.aborted and server.result is None
    assert not [v for v in vars(server).values() if isinstance(v, np.ndarray)]


def test_sparse_graph_tolerates_dropouts_that_leave_t_holders_everywhere() -> None:
    config, updates = make_round(60, 500, seed=7)
    assert config.degree < 59
    # drop clients far apart on the ring: every neighbourhood loses at most one holder per stage
    dropped = {Stage.SHARE_KEYS: {config.clients[0]}, Stage.MASKED_INPUT: {config.clients[30]},
               Stage.UNMASK: {config.clients[45]}}
    result = run_secagg_round(updates, config=config, rng_seed=5, drop_at=dropped)
    assert_exact(result, config, updates,
                 [c for c in config.clients if c not in {config.clients[0], config.clients[30]}])


def test_sparse_graph_aborts_when_one_neighbourhood_falls_below_t() -> None:
    config, updates = make_round(60, 50, seed=7)
    victim = config.clients[10]
    gone = sorted(config.neighbours[victim])[: config.degree + 1 - config.threshold + 1]
    with pytest.raises(SecAggAborted, match=repr(victim)):
        run_secagg_round(updates, config=config, rng_seed=5, drop_at={Stage.MASKED_INPUT: set(gone)})


# --- the server never holds an individual update ------------------------------------------------------


def _arrays(obj: Any, depth: int = 0) -> list[np.ndarray]:
    if isinstance(obj, np.ndarray):
        return [obj.copy()]
    if depth > 4:
        return []
    if isinstance(obj, dict):
        return [a for k, v in obj.items() for x in (k, v) for a in _arrays(x, depth + 1)]
    if isinstance(obj, list | tuple | set | frozenset):
        return [a for v in obj for a in _arrays(v, depth + 1)]
    if hasattr(obj, "__dict__"):
        return _arrays(vars(obj), depth + 1)
    return []


def test_instrumented_server_never_holds_an_individual_unmasked_update() -> None:
    config, updates = make_round(7, 400, degree=6, threshold=4)
    c = config.clients
    late = c[2]  # drops at the masked-input stage, then its masked input arrives after the deadline
    server = ServerProtocol(config)
    held: list[np.ndarray] = []
    receive, close = server.receive, server.close_stage

    def record() -> None:
        held.extend(_arrays(vars(server)))

    def recording_receive(message: Message) -> list[Message]:
        try:
            return receive(message)
        finally:
            record()

    def recording_close() -> list[Message]:
        try:
            return close()
        finally:
            record()

    server.receive = recording_receive  # type: ignore[method-assign]
    server.close_stage = recording_close  # type: ignore[method-assign]

    # drive by hand to learn each client's self-mask seed and masked input (white box)
    clients = {x: ClientProtocol(config, x, updates[x], random_bytes=SeededRandomBytes(x)) for x in c}
    seeds: dict[str, bytes] = {}
    masked: dict[str, np.ndarray] = {}
    rejected: list[str] = []
    inbox: list[Message] = [m for x in c for m in clients[x].start()]
    while not server.done:
        if not inbox:
            inbox = server.close_stage()
            if server.stage is Stage.UNMASK and late in masked:  # the late masked input arrives now
                header = Header(config.round_id, Stage.MASKED_INPUT, late, "", 2)
                try:
                    server.receive(MaskedInput(header, masked[late]))
                except ProtocolViolation as exc:
                    rejected.append(str(exc))
            continue
        message = inbox.pop(0)
        if message.header.recipient == "":
            if isinstance(message, MaskedInput):
                masked[message.header.sender] = message.masked.copy()
                if message.header.sender == late:
                    continue  # lost in the network until after the deadline
            if message.header.sender == c[5] and message.header.stage is Stage.UNMASK:
                continue  # c[5] drops at unmasking: its self-mask comes from shares
            inbox.extend(server.receive(message))
        else:
            client = clients[message.header.recipient]
            out = client.receive(message)
            if isinstance(message, KeysBroadcast):
                seeds[client.client_id] = client._self_mask_seed  # read before the client deletes it
            inbox.extend(out)
    assert rejected and "replayed, late or out of order" in rejected[0]
    assert server.result is not None
    assert_exact(server.result, config, updates, [x for x in c if x != late])

    forbidden: dict[str, list[np.ndarray]] = {}
    for x in c:
        q = quantize(updates[x], clip=CLIP, max_clients=len(c))
        self_mask = prg_mask(seeds[x], size=config.size)
        forbidden[x] = [q, q + self_mask, masked[x] - self_mask]  # bare; self-mask only; pairwise only
    assert len(held) > 20
    for vector in held:
        for x, targets in forbidden.items():
            for target in targets:
                assert not np.array_equal(vector, target), f"server held an unmasked form of {x}'s update"


# --- clients refuse what a correct server never sends -------------------------------------------------


def tampering(kind: type, target: str, change: Callable[[Any], Any]) -> Callable[[Message], list[Message]]:
    def intercept(message: Message) -> list[Message]:
        if isinstance(message, kind) and message.header.recipient == target:
            return [change(message)]
        return [message]

    return intercept


def run_refusal(intercept: Callable[[Message], list[Message]]) -> tuple[SecAggResult, list[str], SecAggConfig,
                                                                         dict[str, np.ndarray]]:
    config, updates = make_round(N, 50, degree=N - 1, threshold=T)
    refusals: list[str] = []
    result = run_secagg_round(updates, config=config, rng_seed=9, intercept=intercept,
                              on_reject=lambda m, exc: refusals.append(str(exc)))
    return result, refusals, config, updates


def test_client_refuses_a_client_named_both_alive_and_dropped() -> None:
    target = "client-00"

    def both(message: UnmaskRequest) -> UnmaskRequest:
        return dataclasses.replace(message, dropped=(*message.dropped, message.alive[-1]))

    result, refusals, config, updates = run_refusal(tampering(UnmaskRequest, target, both))
    assert len(refusals) == 1 and "named in both" in refusals[0]
    # the refusing client sent no shares; the others unmask it, so the round still completes
    assert_exact(result, config, updates, config.clients)


def test_client_refuses_fewer_than_t_holders() -> None:
    target = "client-01"

    def fewer(message: KeysBroadcast) -> KeysBroadcast:
        keep = [target, *[c for c in message.keys if c != target][:T - 2]]
        return dataclasses.replace(message, keys={c: message.keys[c] for c in keep})

    result, refusals, config, updates = run_refusal(tampering(KeysBroadcast, target, fewer))
    assert len(refusals) == 1 and "at least t = 5" in refusals[0]
    assert target in result.dropped
    assert_exact(result, config, updates, [c for c in config.clients if c != target])


def test_client_refuses_duplicate_keys() -> None:
    target = "client-02"

    def duplicate(message: KeysBroadcast) -> KeysBroadcast:
        keys = dict(message.keys)
        keys["client-05"] = keys["client-04"]
        return dataclasses.replace(message, keys=keys)

    result, refusals, _, _ = run_refusal(tampering(KeysBroadcast, target, duplicate))
    assert len(refusals) == 1 and "duplicates" in refusals[0]
    assert target in result.dropped


def test_server_refuses_a_client_advertising_anothers_key() -> None:
    config, updates = make_round(5, 10)
    server = ServerProtocol(config)
    a = ClientProtocol(config, config.clients[0], updates[config.clients[0]]).start()[0]
    server.receive(a)
    assert isinstance(a, AdvertiseKeys)
    copy = AdvertiseKeys(dataclasses.replace(a.header, sender=config.clients[1]), a.cipher_public,
                         b"\x01" * 32)
    with pytest.raises(ProtocolViolation, match="repeated or malformed key"):
        server.receive(copy)
    assert server.waiting_for == frozenset(config.clients[1:])


def test_client_refuses_a_tampered_share() -> None:
    target = "client-03"

    def flip(message: RelayedShares) -> RelayedShares:
        ciphertexts = dict(message.ciphertexts)
        first = sorted(ciphertexts)[0]
        ct = bytearray(ciphertexts[first])
        ct[-1] ^= 1
        ciphertexts[first] = bytes(ct)
        return dataclasses.replace(message, ciphertexts=ciphertexts)

    result, refusals, config, updates = run_refusal(tampering(RelayedShares, target, flip))
    assert len(refusals) == 1 and "fails" in refusals[0]
    assert_exact(result, config, updates, [c for c in config.clients if c != target])


# --- replayed, reordered and foreign messages ---------------------------------------------------------


@pytest.mark.parametrize("kind", [AdvertiseKeys, ShareKeys, MaskedInput, KeysBroadcast, RelayedShares,
                                  UnmaskRequest])
def test_replayed_messages_are_refused_and_the_round_completes(kind: type) -> None:
    def replay(message: Message) -> list[Message]:
        return [message, message] if isinstance(message, kind) else [message]

    config, updates = make_round(6, 80)
    refusals: list[str] = []
    result = run_secagg_round(updates, config=config, rng_seed=1, intercept=replay,
                              on_reject=lambda m, exc: refusals.append(str(exc)))
    assert len(refusals) == 6  # one replay per client, each refused
    assert all("replayed" in r for r in refusals)
    assert_exact(result, config, updates, config.clients)


def test_reordered_messages_are_refused_by_clients_and_server() -> None:
    config, updates = make_round(4, 20)
    c = config.clients
    clients = {x: ClientProtocol(config, x, updates[x]) for x in c}
    server = ServerProtocol(config)
    adverts = [clients[x].start()[0] for x in c]
    broadcasts: list[Message] = []
    for m in adverts:
        broadcasts += server.receive(m)
    shares = {m.header.recipient: clients[m.header.recipient].receive(m)[0] for m in broadcasts}
    # a masked input before the stage that collects them: out of order
    early = MaskedInput(dataclasses.replace(shares[c[0]].header, stage=Stage.MASKED_INPUT, seq=2),
                        np.zeros(20, np.uint32))
    with pytest.raises(ProtocolViolation, match="out of order"):
        server.receive(early)
    relayed: list[Message] = []
    for x in c:
        relayed += server.receive(shares[x])
    # a past message delivered again to a client that has moved on
    with pytest.raises(ProtocolViolation, match="replayed or out of order"):
        clients[c[1]].receive(broadcasts[1])
    assert not clients[c[1]].failed
    # a future message (the unmask request) before the relayed shares
    future = UnmaskRequest(dataclasses.replace(relayed[2].header, stage=Stage.UNMASK, seq=2), (c[2],), ())
    with pytest.raises(ProtocolViolation, match="replayed or out of order"):
        clients[c[2]].receive(future)
    assert not clients[c[2]].failed
    # a message with the right stage but the wrong sequence number
    with pytest.raises(ProtocolViolation, match="seq"):
        clients[c[3]].receive(dataclasses.replace(relayed[3], header=dataclasses.replace(relayed[3].header,
                                                                                          seq=5)))
    # the genuine messages still work
    masked: list[Message] = []
    for m in relayed:
        masked += clients[m.header.recipient].receive(m)
    requests: list[Message] = []
    for m in masked:
        requests += server.receive(m)
    for m in requests:
        for reply in clients[m.header.recipient].receive(m):
            server.receive(reply)
    assert server.result is not None
    assert_exact(server.result, config, updates, c)


def test_messages_of_another_round_are_refused() -> None:
    config, updates = make_round(4, 10, round_id="round-1")
    other = dataclasses.replace(config, round_id="round-2")
    server = ServerProtocol(other)
    stale = ClientProtocol(config, config.clients[0], updates[config.clients[0]]).start()[0]
    with pytest.raises(ProtocolViolation, match="round 'round-1'"):
        server.receive(stale)
    assert server.waiting_for == frozenset(config.clients)
    client = ClientProtocol(other, config.clients[0], updates[config.clients[0]])
    client.start()
    foreign = KeysBroadcast(dataclasses.replace(stale.header, round_id="round-1", stage=Stage.SHARE_KEYS,
                                                sender="", recipient=config.clients[0]), {})
    with pytest.raises(ProtocolViolation, match="another round"):
        client.receive(foreign)


def test_messages_to_a_finished_or_aborted_server_are_refused() -> None:
    config, updates = make_round(3, 5)
    server = ServerProtocol(config)
    message = ClientProtocol(config, config.clients[0], updates[config.clients[0]]).start()[0]
    server.receive(message)
    with pytest.raises(SecAggAborted):
        server.close_stage()
    with pytest.raises(ProtocolViolation, match="aborted"):
        server.receive(message)
    with pytest.raises(SecAggError, match="running round"):
        server.close_stage()


def test_updates_must_match_the_configuration() -> None:
    config, _updates = make_round(3, 5)
    with pytest.raises(SecAggError, match="5 values"):
        ClientProtocol(config, config.clients[0], np.zeros(6))
    with pytest.raises(SecAggError, match="one of the round's clients"):
        ClientProtocol(config, "stranger", np.zeros(5))
    with pytest.raises(SecAggError, match="one per client"):
        run_secagg_round({"a": np.zeros(5)}, config=config)
