"""Secure aggregation over gRPC: the same rounds as in the simulation, and a client lost mid-protocol."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grpc")

from fedra.job import JobSpec, parse_job
from fedra.records import decode_message
from fedra.simulation import client_ids, simulate
from fedra.transport.base import Buffer, Task
from fedra.transport.grpc import GrpcConnector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from net_helpers import run_in_threads

TASKS = Path(__file__).resolve().parents[1] / "simulation"


def job(*, privacy: bool = False, stage_timeout: float = 20.0) -> JobSpec:
    table: dict[str, Any] = {
        "job": {"name": "secure", "module": "softmax_task.py", "framework": "numpy", "rounds": 3, "seed": 5},
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5, "num_clients": 5},
        "strategy": {"fraction": 1.0, "min_clients": 3, "min_replies": 3, "round_timeout": 30.0},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
        "simulation": {"workers": 1},
        "secagg": {"stage_timeout": stage_timeout},
    }
    if privacy:
        table["privacy"] = {"mode": "client", "clip_norm": 1.0, "delta": 1e-5, "noise_multiplier": 0.5,
                            "sampling": "fixed", "noise_seed": "job"}
    return parse_job(table, base_dir=TASKS)


class Crashing:
    """A connector that stops serving (as if killed) when a secure aggregation task of ``stage`` arrives."""

    def __init__(self, inner: GrpcConnector, stage: int, stop: threading.Event) -> None:
        self.inner, self.stage, self.stop = inner, stage, stop

    def pull(self, wait: float) -> Any:
        got = self.inner.pull(wait)
        if got is not None and decode_message(got.payload).meta.get("stage") == self.stage:
            self.stop.set()  # this client's loop ends without replying
            self.inner.close()
            return None
        return got

    def push(self, task: Task, payload: Buffer | None = None, *, error: str | None = None) -> Any:
        return self.inner.push(task, payload, error=error)


@pytest.mark.parametrize("privacy", [False, True], ids=["plain", "distributed-dp"])
def test_secure_rounds_over_grpc_equal_the_simulation_bit_for_bit(privacy: bool) -> None:
    spec = job(privacy=privacy)
    expected = simulate(spec)
    result = run_in_threads(spec)
    assert [r.secagg["survivors"] for r in result.records if r.secagg] == [5, 5, 5]
    assert all(r.completed for r in result.records)
    assert result.digest == expected.digest, "exact ring sums: where the protocol runs changes nothing"
    if privacy:
        assert [r.epsilon for r in result.records] == [r.epsilon for r in expected.records]
        assert all(r.epsilon is not None and r.epsilon > 0 for r in result.records)


def test_a_client_killed_during_secure_aggregation_is_a_dropout() -> None:
    spec = job(stage_timeout=3.0)
    victim = client_ids(5)[3]

    def wrap(cid: str, conn: GrpcConnector, stop: threading.Event) -> Any:
        return Crashing(conn, stage=2, stop=stop) if cid == victim else conn  # dies before its masked input

    result = run_in_threads(spec, wrap)
    first = result.records[0]
    assert first.completed and first.secagg is not None
    assert first.secagg["survivors"] == 4 and victim not in first.participants
    assert all(r.completed and r.secagg is not None and r.secagg["survivors"] == 4 for r in result.records[1:])
