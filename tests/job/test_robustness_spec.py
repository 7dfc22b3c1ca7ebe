"""The job spec's robustness fields: defences in [strategy], [quarantine] and [attack], and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from fedra.errors import JobSpecError
from fedra.job import JobSpec, parse_job
from fedra.simulation import build_strategy
from fedra.strategy import QuarantinePolicy


def spec(**sections: dict[str, Any]) -> JobSpec:
    return parse_job({"job": {"module": "task.py", "rounds": 1}, "data": {"num_clients": 20}, **sections})


@pytest.mark.parametrize("fields", [
    {"aggregator": "bulyan", "num_byzantine": 4},
    {"aggregator": "centered_clip", "clip_tau": 0.25, "clip_iterations": 3},
    {"aggregator": "norm_bound", "max_norm": 2.5},
    {"aggregator": "fltrust", "root_size": 50},
])
def test_defence_fields_reach_the_aggregator(fields: dict[str, Any]) -> None:
    job = spec(strategy=fields)
    a = build_strategy(job).aggregator
    assert a.kind == fields["aggregator"]
    for name, value in fields.items():
        if hasattr(a, name) and name != "aggregator":
            assert getattr(a, name) == value
    assert job.strategy.root_size == fields.get("root_size", 100)


def test_quarantine_section_is_the_policy() -> None:
    job = spec(quarantine={"threshold": 3.0, "quarantine_rounds": 4})
    assert job.quarantine is not None
    assert job.quarantine.policy() == QuarantinePolicy(threshold=3.0, quarantine_rounds=4)
    assert spec().quarantine is None


@pytest.mark.parametrize(("sections", "where", "says"), [
    ({"strategy": {"max_norm": 0}}, "strategy.max_norm", "greater than 0"),
    ({"strategy": {"aggregator": "centered_clip", "clip_iterations": 0}}, "strategy.clip_iterations",
     "greater than or equal to 1"),
    ({"quarantine": {"decay": 1.0}}, "quarantine.decay", "less than 1"),
    ({"attack": {"kind": "sign_flip", "fraction": 1.0}}, "attack.fraction", "less than 1"),
    ({"attack": {"kind": "ipm", "fraction": 0.2, "params": {"epsilon": -1}}}, "attack",
     "attack.params.epsilon: expected a number > 0"),
    ({"strategy": {"aggregator": "bulyan", "num_byzantine": 5}}, "(top level)", "4*num_byzantine+3 = 23"),
    ({"strategy": {"aggregator": "median"}, "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0,
                                                        "delta": 1e-5}},
     "(top level)", "privacy with strategy.aggregator = 'median': expected aggregator = 'mean'"),
    ({"quarantine": {}, "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}},
     "(top level)", "quarantine with privacy: expected one of them"),
])
def test_bad_robustness_specs_name_the_field(sections: dict[str, Any], where: str, says: str) -> None:
    with pytest.raises(JobSpecError) as info:
        spec(**sections)
    text = str(info.value)
    assert where in text and says in text, text
