"""Defences, quarantine and the update hook through the real round driver on the in-memory transport."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from fedra import aggregation as agg
from fedra.errors import ConfigError
from fedra.privacy import DPConfig, DPFedAvg
from fedra.records import Message, decode_message, encode_message
from fedra.runtime import CheckpointStore, DriverConfig, RoundDriver
from fedra.strategy import Aggregator, FractionSampler, QuarantinePolicy, Strategy
from fedra.transport import FunctionTransport, Task, TaskBatch

INITIAL = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float64)}
CLIENTS = [f"c{i}" for i in range(9)]
BAD = "c7"


def model_of(client_id: str, rnd: int, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Client k moves the model by a small, client-specific step; client BAD sends a huge one."""
    k = int(client_id[1:])
    rng = np.random.default_rng([k, rnd])
    step = 50.0 if client_id == BAD else 0.1
    return {"w": (params["w"] + np.float32(step) * (1 + rng.standard_normal((4, 3)).astype(np.float32) * 0.3)
                  ).astype(np.float32),
            "b": params["b"] + step * (1 + 0.3 * rng.standard_normal(3))}


def handler(batch: TaskBatch, task: Task) -> bytearray:
    msg = decode_message(batch.payload)
    out = model_of(task.client_id, batch.round, msg.arrays)
    n = 10 * (int(task.client_id[1:]) + 1)
    return encode_message(Message(arrays=out, meta={"task_id": task.task_id, "nonce": task.nonce,
                                                    "num_examples": n}))


def run(aggregator: Aggregator, *, rounds: int = 1, **kw: object) -> RoundDriver:
    driver = RoundDriver(strategy=Strategy(aggregator=aggregator), transport=FunctionTransport(CLIENTS, handler),
                         initial_params=INITIAL, config=DriverConfig(rounds=rounds), **kw)  # type: ignore[arg-type]
    driver.run()
    return driver


def deltas(rnd: int, params: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    return [{k: v - params[k] for k, v in model_of(c, rnd, params).items()} for c in CLIENTS]


def plus(params: Mapping[str, np.ndarray], d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (params[k] + d[k]).astype(params[k].dtype) for k in params}


def assert_same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_bulyan_in_the_driver_is_the_pure_function() -> None:
    models = [model_of(c, 1, INITIAL) for c in CLIENTS]
    expect, _ = agg.bulyan(models, num_byzantine=1)
    assert_same(run(Aggregator("bulyan", num_byzantine=1)).params, expect)


def test_norm_bound_is_the_weighted_mean_of_bounded_deltas_added_to_the_global_model() -> None:
    weights = [10.0 * (i + 1) for i in range(len(CLIENTS))]
    bounded = agg.norm_bound(deltas(1, INITIAL), max_norm=0.5)
    expect = plus(INITIAL, agg.weighted_mean(bounded, weights))
    got = run(Aggregator("norm_bound", max_norm=0.5)).params
    assert_same(got, expect)
    # the attacker's 50x step is bounded: the plain mean would move w by several units
    assert float(np.abs(got["w"]).max()) < 0.6


def test_centered_clip_starts_from_the_previous_rounds_aggregate_delta() -> None:
    policy = Aggregator("centered_clip", clip_tau=0.3, clip_iterations=2)
    zero = {k: np.zeros_like(v) for k, v in INITIAL.items()}
    d1 = agg.centered_clip(deltas(1, INITIAL), center=zero, tau=0.3, iterations=2)
    p1 = plus(INITIAL, d1)
    d2 = agg.centered_clip(deltas(2, p1), center=d1, tau=0.3, iterations=2)
    driver = run(policy, rounds=2)
    assert_same(driver.params, plus(p1, d2))
    # the center is state: it is the last aggregate delta, kept with the optimizer's moments
    np.testing.assert_allclose(driver.state.moments["center/w"], d2["w"], rtol=1e-6)


def test_centered_clip_center_survives_a_resume(tmp_path: Path) -> None:
    policy = Aggregator("centered_clip", clip_tau=0.3)
    straight = run(policy, rounds=3)
    run(policy, rounds=2, checkpoints=CheckpointStore(tmp_path))
    resumed = run(policy, rounds=3, checkpoints=CheckpointStore(tmp_path))
    assert resumed.state.round == 3
    assert_same(resumed.params, straight.params)


def test_fltrust_in_the_driver_uses_the_root_trainers_model() -> None:
    def root(params: Mapping[str, np.ndarray], rnd: int) -> dict[str, np.ndarray]:
        return {k: v + np.asarray(0.1, v.dtype) for k, v in params.items()}

    server = {k: np.full_like(v, 0.1) for k, v in INITIAL.items()}
    expect, scores = agg.fltrust(deltas(1, INITIAL), server_update=server)
    assert scores[CLIENTS.index(BAD)] > 0  # the attacker's direction is right, its norm is rescaled
    assert_same(run(Aggregator("fltrust"), root_trainer=root).params, plus(INITIAL, expect))


def test_fltrust_without_a_root_trainer_is_refused() -> None:
    with pytest.raises(ConfigError, match="root_trainer"):
        run(Aggregator("fltrust"))


def test_update_hook_replaces_the_models_before_aggregation() -> None:
    seen: list[list[str]] = []

    def hook(rnd: int, ids: Sequence[str], models: Sequence[Mapping[str, np.ndarray]],
             global_params: Mapping[str, np.ndarray]) -> list[Mapping[str, np.ndarray]]:
        seen.append(list(ids))
        return [{k: np.asarray(global_params[k] + (1.0 if c == "c0" else 0.0)).astype(v.dtype)
                 for k, v in m.items()} for c, m in zip(ids, models, strict=True)]

    driver = run(Aggregator("median"), update_hook=hook)
    assert seen == [CLIENTS]  # the whole round, in task order
    assert_same(driver.params, {k: np.zeros_like(v) for k, v in INITIAL.items()})  # median of 0s and one 1


def test_quarantine_excludes_a_repeat_offender_and_reports_it(tmp_path: Path) -> None:
    policy = QuarantinePolicy(quarantine_rounds=3, min_updates=5)
    driver = run(Aggregator("median"), rounds=7, quarantine=policy, checkpoints=CheckpointStore(tmp_path))
    events = [e for r in driver.records for e in (r.events or [])]
    quarantines = [e for e in events if e["event"] == "client_quarantine"]
    assert [e["client"] for e in quarantines] == [BAD]  # no honest client is quarantined
    q = quarantines[0]
    # flagged in rounds 1, 2, 3: suspicion 1, 1.8, 2.44 crosses the threshold 2 in round 3
    assert q["round"] == 3 and q["until"] == 7 and "norm" in q["reason"] and q["scores"]["z_norm"] > 3.5
    for r in driver.records:  # out of the sample while quarantined, back after its release
        took_part = BAD in r.participants
        assert took_part == (r.round <= 3 or r.round >= 7), r.round
    assert any(e["event"] == "client_release" and e["round"] == 7 for e in events)
    # the reputation is in the checkpoint: a resumed run knows who is quarantined
    saved = CheckpointStore(tmp_path).load()
    assert saved is not None and b'"quarantines":{"c7":' in saved.extra["quarantine"].replace(b" ", b"")


def test_quarantine_state_survives_a_resume(tmp_path: Path) -> None:
    policy = QuarantinePolicy(quarantine_rounds=3, min_updates=5)
    straight = run(Aggregator("mean"), rounds=5, quarantine=policy)
    run(Aggregator("mean"), rounds=3, quarantine=policy, checkpoints=CheckpointStore(tmp_path))
    resumed = run(Aggregator("mean"), rounds=5, quarantine=policy, checkpoints=CheckpointStore(tmp_path))
    assert resumed.reputation == straight.reputation
    assert BAD not in resumed.records[0].participants  # round 4: still quarantined after the resume
    assert_same(resumed.params, straight.params)


def test_the_mean_with_quarantine_equals_the_streaming_mean_when_nobody_is_quarantined() -> None:
    policy = QuarantinePolicy(min_updates=100)  # never scores: the aggregate must be unchanged
    a = run(Aggregator("mean"), rounds=2)
    b = run(Aggregator("mean"), rounds=2, quarantine=policy)
    assert_same(a.params, b.params)
    assert b.records[0].events == [] and a.records[0].events is None


def test_quarantine_with_privacy_is_refused() -> None:
    dp = DPFedAvg(DPConfig(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5), rounds=1, population=9,
                  sampling_rate=1.0)
    with pytest.raises(ConfigError, match="quarantine with privacy"):
        RoundDriver(strategy=Strategy(sampler=FractionSampler(1.0)), transport=FunctionTransport(CLIENTS, handler),
                    initial_params=INITIAL, config=DriverConfig(rounds=1), privacy=dp,
                    quarantine=QuarantinePolicy())
