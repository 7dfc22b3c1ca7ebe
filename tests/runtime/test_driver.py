"""The round driver on the in-memory transport: aggregation, validation at the boundary, resume."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from fedra.records import Message, decode_message, encode_arrays, encode_message
from fedra.runtime import CheckpointStore, DriverConfig, RoundDriver, RoundRecord, model_digest
from fedra.strategy import Aggregator, FractionSampler, ServerOptimizer, Strategy
from fedra.transport import FunctionTransport, Reply, Task, TaskBatch, Transport

INITIAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float64), "n": np.zeros((), np.int64)}
CLIENTS = [f"c{i}" for i in range(6)]


def client_update(client_id: str, rnd: int, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A deterministic fake 'training': each client pulls the model toward its own target."""
    k = int(client_id[1:]) + 1
    return {"w": (params["w"] + np.float32(0.1 * k * rnd)).astype(np.float32),
            "b": params["b"] - 0.01 * k, "n": params["n"] + 1}


def honest(batch: TaskBatch, task: Task, *, examples: int | None = None,
           arrays: Mapping[str, np.ndarray] | None = None, nonce: str | None = None,
           task_id: str | None = None) -> bytearray:
    msg = decode_message(batch.payload)
    out = arrays if arrays is not None else client_update(task.client_id, batch.round, msg.arrays)
    n = examples if examples is not None else 10 * (int(task.client_id[1:]) + 1)
    return encode_message(Message(arrays=out, metrics={"loss": 1.0 / n},
                                  meta={"task_id": task_id or task.task_id, "nonce": nonce or task.nonce,
                                        "num_examples": n}))


def make_driver(transport: Transport, *, rounds: int = 1, strategy: Strategy | None = None,
                store: CheckpointStore | None = None, **cfg: object) -> RoundDriver:
    return RoundDriver(strategy=strategy or Strategy(), transport=transport, initial_params=INITIAL,
                       config=DriverConfig(rounds=rounds, **cfg),  # type: ignore[arg-type]
                       checkpoints=store)


def test_one_round_of_fedavg_is_the_weighted_mean_of_updates() -> None:
    result = make_driver(FunctionTransport(CLIENTS, honest)).run()
    weights = np.array([10.0 * (i + 1) for i in range(6)])
    ups = [client_update(c, 1, INITIAL) for c in CLIENTS]
    expect_w = np.average(np.stack([u["w"] for u in ups]), axis=0, weights=weights)
    np.testing.assert_allclose(result.params["w"], expect_w, rtol=1e-6)
    np.testing.assert_allclose(result.params["b"], np.average([u["b"] for u in ups], axis=0, weights=weights))
    assert result.params["w"].dtype == np.float32 and result.params["n"].dtype == np.int64
    assert result.params["n"] == 1
    rec = result.records[0]
    assert rec.completed and rec.accepted == 6 and rec.sampled == 6 and rec.failures == {}
    # train metrics are example-weighted means of the clients' metrics
    assert rec.train_metrics["loss"] == pytest.approx(sum(1.0 for _ in CLIENTS) / weights.sum())


class Shuffled(Transport):
    """Delivers replies in a given permutation of task order, like workers finishing out of order."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = order

    def clients(self) -> Sequence[str]:
        return CLIENTS

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        replies = [Reply(t.task_id, t.client_id, payload=honest(batch, t)) for t in batch.tasks]
        for i in self.order:
            yield replies[i]


def test_result_is_bit_identical_whatever_order_replies_arrive_in() -> None:
    strategy = Strategy(aggregator=Aggregator(fold_batch=2))
    digests = {model_digest(make_driver(Shuffled(order), rounds=3, strategy=strategy).run().params)
               for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2])}
    assert len(digests) == 1


def test_bad_replies_are_rejected_with_reasons_and_the_round_goes_on() -> None:
    big = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float64), "n": np.zeros((), np.int64),
           "pad": np.zeros(200_000, np.uint8)}
    nan = dict(client_update("c0", 1, INITIAL), w=np.full((3, 2), np.nan, np.float32))

    def handler(batch: TaskBatch, task: Task) -> bytes | bytearray | None:
        c = task.client_id
        if c == "c0":
            return honest(batch, task)
        if c == "c1":
            return honest(batch, task, arrays=nan)
        if c == "c2":
            return honest(batch, task, arrays=dict(INITIAL, w=np.zeros((2, 3), np.float32)))
        if c == "c3":
            return honest(batch, task, nonce="forged")
        if c == "c4":
            raise RuntimeError("CUDA out of memory")
        return honest(batch, task, arrays=big)

    driver = make_driver(FunctionTransport(CLIENTS, handler), max_payload_bytes=100_000)
    rec = driver.run().records[0]
    assert rec.completed and rec.accepted == 1
    assert rec.failures == {"NonFiniteValues": 1, "SchemaMismatch": 1, "task id or nonce mismatch": 1,
                            "client error: RuntimeError: CUDA out of memory": 1, "PayloadTooLarge": 1}
    np.testing.assert_array_equal(driver.params["w"], client_update("c0", 1, INITIAL)["w"])


class Hostile(Transport):
    """Replays, impersonates and sends garbage besides one honest reply."""

    def clients(self) -> Sequence[str]:
        return ["a", "b"]

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        ta, tb = batch.tasks
        good = honest(batch, Task(ta.task_id, "c0", ta.nonce))
        yield Reply(ta.task_id, "a", payload=good)
        yield Reply(ta.task_id, "a", payload=good)  # replay
        yield Reply(ta.task_id, "b", payload=good)  # b answers a's task
        yield Reply("r1.99", "b", payload=good)  # a task never sent
        yield Reply(tb.task_id, "b", payload=b"\x00garbage")


def test_replays_impersonation_and_garbage_are_rejected() -> None:
    rec = make_driver(Hostile()).run().records[0]
    assert rec.accepted == 1
    assert rec.failures == {"duplicate reply": 1, "reply to a task not sent to that client": 2, "DecodeError": 1}


def test_too_few_replies_leave_the_model_unchanged() -> None:
    def handler(batch: TaskBatch, task: Task) -> bytearray | None:
        return honest(batch, task) if task.client_id in ("c0", "c1") else None  # the rest drop out

    driver = make_driver(FunctionTransport(CLIENTS, handler), rounds=2, min_replies=3)
    result = driver.run()
    assert [r.completed for r in result.records] == [False, False]
    assert model_digest(result.params) == model_digest(INITIAL)
    assert result.state.round == 2


def test_a_failing_observer_does_not_stop_the_run() -> None:
    class Broken:
        def on_run_start(self, info: object) -> None:
            raise ValueError("boom")

        def on_round_end(self, record: RoundRecord) -> None:
            raise ValueError("boom")

        def on_run_end(self, records: object) -> None:
            raise ValueError("boom")

    d = RoundDriver(strategy=Strategy(), transport=FunctionTransport(CLIENTS, honest), initial_params=INITIAL,
                    config=DriverConfig(rounds=2), observers=[Broken()])
    assert len(d.run().records) == 2


def sampled_fedadam() -> Strategy:
    return Strategy(sampler=FractionSampler(fraction=0.5), optimizer=ServerOptimizer("fedadam", lr=0.05))


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    full = make_driver(FunctionTransport(CLIENTS, honest), rounds=5, strategy=sampled_fedadam(), seed=7).run()
    store = CheckpointStore(tmp_path / "ckpt")
    first = make_driver(FunctionTransport(CLIENTS, honest), rounds=3, strategy=sampled_fedadam(), seed=7,
                        store=store).run()
    assert [r.round for r in first.records] == [1, 2, 3]
    resumed = make_driver(FunctionTransport(CLIENTS, honest), rounds=5, strategy=sampled_fedadam(), seed=7,
                          store=store)
    assert resumed.state.round == 3
    second = resumed.run()
    assert [r.round for r in second.records] == [4, 5]
    assert model_digest(second.params) == model_digest(full.params)
    assert second.state == full.state
    # the client registry is checkpointed with the model and restored on resume
    assert resumed.registry and sum(c.rounds_participated for c in resumed.registry.values()) == 5 * 3
    assert {c.name for c in store.load().clients} == set(resumed.registry)  # type: ignore[union-attr]
    assert store.load() is not None and store.load().round == 5  # type: ignore[union-attr]


def test_checkpoint_of_a_different_model_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(1, {"other": np.zeros(1, np.float32)}, Strategy().init_state(INITIAL, seed=0))
    with pytest.raises(Exception, match="different model"):
        make_driver(FunctionTransport(CLIENTS, honest), store=store)


def test_corrupt_checkpoint_is_detected(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(1, INITIAL, Strategy().init_state(INITIAL, seed=0))
    model = next(tmp_path.glob("model-*.safetensors"))
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    from fedra.errors import StateError

    with pytest.raises(StateError, match="sha256"):
        store.load()


def test_checkpoint_files_are_readable_safetensors(tmp_path: Path) -> None:
    import safetensors.numpy

    store = CheckpointStore(tmp_path)
    store.save(4, INITIAL, Strategy().init_state(INITIAL, seed=0))
    loaded = safetensors.numpy.load_file(str(tmp_path / "model-r000004.safetensors"))
    assert set(loaded) == set(INITIAL)
    assert not list(tmp_path.glob("*.tmp"))
    _ = encode_arrays  # the same codec writes both


class LateCounting(Transport):
    """Answers every task; in round 2 it discards three late replies (as the gRPC server counts them)."""

    def __init__(self) -> None:
        self.late = 0

    def clients(self) -> Sequence[str]:
        return CLIENTS

    def late_replies(self) -> int:
        return self.late

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        if batch.round == 2:
            self.late += 3
        for t in batch.tasks:
            yield Reply(t.task_id, t.client_id, payload=honest(batch, t))


def test_late_replies_discarded_during_a_round_are_in_its_record() -> None:
    records = make_driver(LateCounting(), rounds=3).run().records
    assert [r.late_replies for r in records] == [None, 3, None]
    assert "late_replies" not in records[0].to_json() and records[1].to_json()["late_replies"] == 3
