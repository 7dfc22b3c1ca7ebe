"""The job spec's [secagg] section: its defaults, and every combination secure aggregation rules out."""

from __future__ import annotations

from typing import Any

import pytest

from fedra.errors import JobSpecError
from fedra.job import JobSpec, parse_job
from fedra.simulation import build_secure

QUORUM = {"min_clients": 3, "min_replies": 2}
DP = {"mode": "client", "clip_norm": 0.5, "delta": 1e-5, "noise_multiplier": 1.0}


def spec(**sections: dict[str, Any]) -> JobSpec:
    sections.setdefault("strategy", dict(QUORUM))
    return parse_job({"job": {"module": "task.py", "rounds": 1}, "data": {"num_clients": 20}, **sections})


def test_secagg_section_reaches_the_driver_settings_with_its_defaults() -> None:
    assert build_secure(spec()) is None
    s = build_secure(spec(secagg={}))
    assert s is not None and (s.clip, s.ring_bits, s.stage_timeout, s.max_weight) == (1.0, 32, 60.0, 1000)
    s = build_secure(spec(secagg={"clip": 3.0, "ring_bits": 64, "stage_timeout": 5, "max_weight": 50}))
    assert s is not None and (s.clip, s.ring_bits, s.stage_timeout, s.max_weight) == (3.0, 64, 5.0, 50)
    # under DP the ring's bound defaults to twice the clip norm: room for the noise shares
    s = build_secure(spec(secagg={}, privacy=DP))
    assert s is not None and s.clip == 1.0


@pytest.mark.parametrize(("sections", "match"), [
    ({"strategy": {**QUORUM, "aggregator": "median"}}, "aggregator = 'mean'"),
    ({"strategy": {**QUORUM, "aggregator": "fltrust"}}, "aggregator = 'mean'"),
    ({"quarantine": {}}, "quarantine with secagg"),
    ({"attack": {"kind": "sign_flip", "fraction": 0.2}}, "model-poisoning"),
    ({"strategy": {"min_clients": 2, "min_replies": 2}}, "min_clients >= 3"),
    ({"strategy": {"min_clients": 3, "min_replies": 1}}, "min_replies >= 2"),
    ({"privacy": {**DP, "mode": "server"}}, "expected mode = 'client'"),
    ({"privacy": {**DP, "mode": "local"}}, "expected mode = 'client'"),
    ({"privacy": {**DP, "adaptive": {}}}, "without adaptive clipping"),
    ({"privacy": DP, "secagg": {"clip": 0.25}}, "below privacy.clip_norm"),
    ({"secagg": {"degree": 3, "threshold": 2}}, "threshold"),
    ({"secagg": {"ring_bits": 16}}, "ring_bits"),
])
def test_combinations_secure_aggregation_rules_out_are_refused_by_name(sections: dict[str, Any], match: str) -> None:
    sections.setdefault("secagg", {})
    with pytest.raises(JobSpecError, match=match):
        spec(**sections)


def test_a_data_attack_composes_with_secure_aggregation() -> None:
    job = spec(secagg={}, attack={"kind": "label_flip", "fraction": 0.2})
    assert job.attack is not None and job.secagg is not None
