"""Secure aggregation driven by the round driver: the same protocol, over the transport contract.

The protocol itself is tested against the papers in tests/secagg; here the question is whether the
driver moves it correctly: what comes out is FedAvg of the survivors (up to quantization), dropouts at
every exchange are survived or abort the round cleanly, nothing a client sends is taken without the
usual checks, and distributed DP's noise and accounting are what the accountant assumes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest

from fedra.errors import ConfigError
from fedra.privacy import DPConfig, DPFedAvg
from fedra.records import Message, decode_message, encode_message
from fedra.runtime import DriverConfig, RoundDriver, SecureAggregation, SecureClient
from fedra.secagg import rounding_sensitivity
from fedra.strategy import Aggregator, FractionSampler, Strategy
from fedra.transport import FunctionTransport, Task, TaskBatch

INITIAL = {"w": np.zeros((40, 5), np.float32), "b": np.zeros(7, np.float64), "n": np.zeros((), np.int64)}
CLIENTS = [f"c{i}" for i in range(8)]


def delta_of(client_id: str, rnd: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([int(client_id[1:]), rnd])
    return {"w": rng.uniform(-0.5, 0.5, INITIAL["w"].shape).astype(np.float32),
            "b": rng.uniform(-0.5, 0.5, INITIAL["b"].shape)}


def examples_of(client_id: str) -> int:
    return 10 * (int(client_id[1:]) + 1)


class Clients:
    """Clients that 'train' to global + a known delta and run the protocol's client side.

    ``drop``: {exchange: clients} where exchange 0 is training and 1..3 the secagg stages; a dropped
    client says nothing from that exchange on.
    """

    def __init__(self, drop: Mapping[int, set[str]] | None = None, zero: bool = False,
                 drop_rounds: set[int] | None = None) -> None:
        self.secure = SecureClient()
        self.drop = drop or {}
        self.zero = zero
        self.drop_rounds = drop_rounds
        self.round = 0

    def dropped(self, client: str, exchange: int) -> bool:
        if self.drop_rounds is not None and self.round not in self.drop_rounds:
            return False
        return any(client in who for stage, who in self.drop.items() if stage <= exchange)

    def __call__(self, batch: TaskBatch, task: Task) -> bytearray | None:
        self.round = batch.round
        if batch.kind == "secagg":
            stage = int(decode_message(batch.payload_of(task)).meta["stage"])  # type: ignore[arg-type]
            return None if self.dropped(task.client_id, stage) else self.secure.step(batch.payload_of(task), task)
        if self.dropped(task.client_id, 0):
            return None
        msg = decode_message(batch.payload)
        d = delta_of(task.client_id, batch.round)
        trained = (dict(msg.arrays) if self.zero else
                   {"w": msg.arrays["w"] + d["w"], "b": msg.arrays["b"] + d["b"], "n": msg.arrays["n"] + 5})
        reply = encode_message(Message(arrays=trained, metrics={"loss": 1.0},
                                       meta={"task_id": task.task_id, "nonce": task.nonce,
                                             "num_examples": examples_of(task.client_id)}))
        return self.secure.start(msg, task, reply, round=batch.round)


def driver(handler: Clients, *, secure: SecureAggregation | None = None, rounds: int = 1, min_replies: int = 2,
           privacy: DPFedAvg | None = None, clients: list[str] = CLIENTS, noise_seed: int | None = None,
           initial: Mapping[str, np.ndarray] = INITIAL) -> RoundDriver:
    return RoundDriver(strategy=Strategy(), transport=FunctionTransport(clients, handler), initial_params=initial,
                       config=DriverConfig(rounds=rounds, min_replies=min_replies),
                       secure=secure or SecureAggregation(clip=1.0), privacy=privacy, noise_seed=noise_seed)


def weighted_mean(clients: list[str], rnd: int = 1, max_weight: int = 1000) -> dict[str, np.ndarray]:
    weights = np.array([min(examples_of(c), max_weight) for c in clients], dtype=np.float64)
    return {name: np.average(np.stack([delta_of(c, rnd)[name] for c in clients]), axis=0, weights=weights)
            for name in ("w", "b")}


def step(num_clients: int, clip: float = 1.0) -> float:
    return clip * num_clients / 2**31  # one quantization level of a 32-bit ring


def test_a_secure_round_is_fedavg_of_the_updates_up_to_quantization() -> None:
    result = driver(Clients()).run()
    rec = result.records[0]
    assert rec.completed and rec.accepted == 8 and rec.failures == {}
    assert rec.secagg is not None and rec.secagg["survivors"] == 8 and rec.secagg["dropped"] == 0
    expect = weighted_mean(CLIENTS)
    tol = 4 * step(8)
    np.testing.assert_allclose(result.params["w"], expect["w"], atol=tol + 1e-7)
    np.testing.assert_allclose(result.params["b"], expect["b"], atol=tol)
    assert result.params["w"].dtype == np.float32
    assert result.params["n"] == 0, "a counter keeps the global value: it is not secretly summed"
    # the protocol's sum is exact: a plain mean of the *weighted* deltas would differ (it is not that)
    assert not np.allclose(result.params["b"], np.mean([delta_of(c, 1)["b"] for c in CLIENTS], axis=0), atol=1e-3)


def test_max_weight_bounds_what_one_client_weighs() -> None:
    result = driver(Clients(), secure=SecureAggregation(clip=1.0, max_weight=30)).run()
    expect = weighted_mean(CLIENTS, max_weight=30)
    np.testing.assert_allclose(result.params["b"], expect["b"], atol=4 * step(8))


@pytest.mark.parametrize("exchange", [0, 1, 2, 3])
def test_dropouts_at_each_exchange_leave_the_survivors_mean(exchange: int) -> None:
    gone = {"c1", "c6"}
    result = driver(Clients(drop={exchange: gone})).run()
    rec = result.records[0]
    assert rec.completed, rec.failures
    assert rec.secagg is not None
    if exchange <= 2:  # dropped before their masked input: not in the sum
        survivors = [c for c in CLIENTS if c not in gone]
        assert rec.secagg["survivors"] == 6 and rec.accepted == 6
        assert set(rec.participants) == set(survivors)
    else:  # their masked input arrived; dropping at unmasking does not remove it
        survivors = CLIENTS
        assert rec.secagg["survivors"] == 8
    np.testing.assert_allclose(result.params["b"], weighted_mean(survivors)["b"], atol=4 * step(8))


def test_too_many_dropouts_abort_the_round_with_no_output() -> None:
    # 8 clients, complete graph (degree 7), threshold 5: four survivors are too few
    result = driver(Clients(drop={2: {"c0", "c1", "c2", "c3"}}, drop_rounds={1}), rounds=2).run()
    first, second = result.records
    assert not first.completed and first.failures.get("secure aggregation aborted") == 1
    assert second.completed, "the next round starts afresh"
    np.testing.assert_allclose(result.params["b"], weighted_mean(CLIENTS, rnd=2)["b"], atol=4 * step(8))


def test_fewer_masked_inputs_than_min_replies_are_never_unmasked() -> None:
    unmask_tasks: list[str] = []
    clients = Clients(drop={2: {"c0", "c1"}})

    def spy(batch: TaskBatch, task: Task) -> bytearray | None:
        if batch.kind == "secagg" and decode_message(batch.payload_of(task)).meta["stage"] == 3:
            unmask_tasks.append(task.client_id)
        return clients(batch, task)

    d = driver(clients, min_replies=7)
    d.transport = FunctionTransport(CLIENTS, spy)
    result = d.run()
    rec = result.records[0]
    assert not rec.completed and rec.failures.get("too few masked inputs to unmask") == 1
    assert unmask_tasks == [], "no client was asked for the shares that would unmask a sum of 6"
    np.testing.assert_array_equal(result.params["b"], INITIAL["b"])


def test_a_reply_signed_by_another_client_is_refused() -> None:
    clients = Clients()

    def impostor(batch: TaskBatch, task: Task) -> bytearray | None:
        if batch.kind == "secagg" and task.client_id == "c3":
            other = next(t for t in batch.tasks if t.client_id == "c4")
            clients(batch, task)  # c3 does its own step, then sends c4's message in its place
            return clients.secure.step(batch.payload_of(other), Task(task.task_id, "c4", task.nonce))
        return clients(batch, task)

    d = driver(clients)
    d.transport = FunctionTransport(CLIENTS, impostor)
    rec = d.run().records[0]
    assert rec.failures.get("secure aggregation message refused", 0) >= 1


def test_secure_aggregation_refuses_what_would_look_at_each_update() -> None:
    with pytest.raises(ConfigError, match="mean aggregator"):
        RoundDriver(strategy=Strategy(aggregator=Aggregator(kind="median")), transport=FunctionTransport(CLIENTS, Clients()),
                    initial_params=INITIAL, config=DriverConfig(rounds=1, min_replies=2),
                    secure=SecureAggregation())
    with pytest.raises(ConfigError, match="min_replies >= 2"):
        RoundDriver(strategy=Strategy(), transport=FunctionTransport(CLIENTS, Clients()), initial_params=INITIAL,
                    config=DriverConfig(rounds=1, min_replies=1), secure=SecureAggregation())


# -- distributed DP ------------------------------------------------------------------------------------

def dp(noise_multiplier: float, clip_norm: float, cohort: int, population: int) -> DPFedAvg:
    config = DPConfig.from_mapping({"mode": "client", "clip_norm": clip_norm, "delta": 1e-5,
                                    "noise_multiplier": noise_multiplier, "sampling": "fixed"})
    return DPFedAvg(config, rounds=10, population=population, clients_per_round=cohort)


def test_distributed_noise_has_the_standard_deviation_the_accountant_assumes() -> None:
    # zero updates: what the round releases is the noise alone, sum of 5 shares over the fixed denominator
    big = {"w": np.zeros(200_000, np.float32)}
    clients = [f"c{i}" for i in range(5)]
    z, c = 1.2, 0.05
    privacy = dp(z, c, cohort=5, population=50)
    d = driver(Clients(zero=True), secure=SecureAggregation(clip=2 * c), privacy=privacy, clients=clients,
               min_replies=5, initial=big, noise_seed=7)
    out = d.run().params["w"].astype(np.float64)
    expect = z * c / 5  # sigma C / m: the noise of central DP-FedAvg on the mean
    assert abs(out.std() / expect - 1) < 0.01
    assert abs(out.mean()) < 5 * expect / math.sqrt(out.size)


def test_fewer_survivors_are_accounted_as_the_smaller_noise_they_carry() -> None:
    z, c = 1.0, 0.5
    full, fewer = dp(z, c, cohort=8, population=80), dp(z, c, cohort=8, population=80)
    rec_full = driver(Clients(), secure=SecureAggregation(clip=1.0), privacy=full, min_replies=5).run().records[0]
    rec_fewer = driver(Clients(drop={2: {"c0", "c5"}}), secure=SecureAggregation(clip=1.0), privacy=fewer,
                       min_replies=5).run().records[0]
    growth = rounding_sensitivity(size=INITIAL["w"].size + INITIAL["b"].size, clip_norm=c, clip=1.0,
                                  max_clients=8)
    assert rec_full.secagg is not None and rec_fewer.secagg is not None
    assert rec_full.secagg["noise_multiplier"] == pytest.approx(z * math.sqrt(8 / 5) / growth)
    assert rec_fewer.secagg["noise_multiplier"] == pytest.approx(z * math.sqrt(6 / 5) / growth)
    assert rec_fewer.epsilon is not None and rec_full.epsilon is not None
    assert rec_fewer.epsilon > rec_full.epsilon
    # the accountant charged exactly that multiplier
    reference = dp(z, c, cohort=8, population=80)
    reference.charge_distributed_round(noise_multiplier=z * math.sqrt(6 / 5) / growth)
    assert rec_fewer.epsilon == pytest.approx(reference.epsilon())


def test_each_client_clips_before_it_noises_and_sums() -> None:
    # no noise, clip norm 0.1: the released mean delta is the mean of deltas clipped to 0.1
    c = 0.1
    privacy = dp(1e-9, c, cohort=8, population=8)
    result = driver(Clients(), secure=SecureAggregation(clip=2 * c), privacy=privacy, min_replies=2).run()
    clipped = []
    for cid in CLIENTS:
        d = delta_of(cid, 1)
        norm = math.sqrt(sum(float(np.sum(np.square(v.astype(np.float64)))) for v in d.values()))
        clipped.append({k: v * min(1.0, c / norm) for k, v in d.items()})
    expect_b = np.sum([u["b"] for u in clipped], axis=0) / 8  # fixed denominator, unweighted
    np.testing.assert_allclose(result.params["b"], expect_b, atol=4 * step(8, 2 * c))


def test_a_client_restarted_mid_round_is_a_dropout_not_a_crash() -> None:
    clients = Clients()

    def amnesia(batch: TaskBatch, task: Task) -> bytearray | None:
        if batch.kind == "secagg" and task.client_id == "c2":
            SecureClient().step(batch.payload_of(task), task)  # a fresh client knows no round: raises
        return clients(batch, task)

    d = driver(clients)
    d.transport = FunctionTransport(CLIENTS, amnesia)
    rec = d.run().records[0]
    assert rec.completed and rec.secagg is not None and rec.secagg["survivors"] == 7
    assert any("client error" in k for k in rec.failures)


def test_each_round_runs_the_protocol_over_its_own_sampled_cohort() -> None:
    clients = [f"c{i}" for i in range(8)]
    d = RoundDriver(strategy=Strategy(sampler=FractionSampler(fraction=0.5, min_clients=3)),
                    transport=FunctionTransport(clients, Clients()), initial_params=INITIAL,
                    config=DriverConfig(rounds=3, min_replies=2), secure=SecureAggregation())
    records = d.run().records
    assert all(r.completed and r.secagg is not None and r.secagg["survivors"] == 4 for r in records)
    assert len({frozenset(r.participants) for r in records}) > 1, "the cohort is sampled anew each round"
