"""Secure aggregation in the simulation: FedAvg's model, up to the ring's quantization, and repeatable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedra.job import JobSpec, parse_job
from fedra.simulation import simulate

TASKS = Path(__file__).resolve().parent


def job(secagg: dict[str, Any] | None) -> JobSpec:
    table: dict[str, Any] = {
        "job": {"name": "sa", "module": "softmax_task.py", "framework": "numpy", "rounds": 3, "seed": 2},
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5, "num_clients": 8},
        "strategy": {"fraction": 0.75, "min_clients": 3, "min_replies": 2},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
        "simulation": {"workers": 2},
    }
    if secagg is not None:
        table["secagg"] = secagg
    return parse_job(table, base_dir=TASKS)


def test_secure_simulation_is_fedavg_up_to_quantization_and_repeats_exactly() -> None:
    plain = simulate(job(None))
    secure = simulate(job({"clip": 2.0}))
    again = simulate(job({"clip": 2.0}))
    assert secure.digest == again.digest, "masks cancel exactly: the result does not depend on the keys"
    assert secure.digest != plain.digest, "the ring's rounding is there"
    # 3 rounds of one quantization step (clip * 6 clients / 2^31) per coordinate, amplified by training
    for name, a in plain.params.items():
        np.testing.assert_allclose(secure.params[name], a, atol=1e-5)
    assert abs(secure.records[-1].eval_metrics["accuracy"] - plain.records[-1].eval_metrics["accuracy"]) < 0.01
    assert all(r.secagg is not None and r.secagg["survivors"] == 6 for r in secure.records)
    assert all(r.secagg is None for r in plain.records)
