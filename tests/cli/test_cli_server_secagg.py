"""`fedra server` and `fedra client` processes with [secagg]: the server learns only sums, and the
model is the simulation's, bit for bit (the ring's sums are exact, so where the protocol runs changes
nothing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedra.job import load_job
from fedra.simulation import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transport"))
from net_helpers import run_network, write_job


def secure_job(tmp_path: Path, *, privacy: bool) -> Path:
    job = write_job(tmp_path, name="secure", rounds=2, seed=3)
    text = job.read_text().replace("[strategy]\n", "[strategy]\nmin_replies = 3\n")
    text += "lr = 0.1\n[secagg]\nstage_timeout = 30.0\n"
    if privacy:
        text += ('[privacy]\nmode = "client"\nclip_norm = 1.0\ndelta = 1e-5\nnoise_multiplier = 0.3\n'
                 'sampling = "fixed"\nnoise_seed = "job"\n')
    job.write_text(text)
    return job


@pytest.mark.slow
@pytest.mark.parametrize("privacy", [False, True], ids=["plain", "distributed-dp"])
def test_secure_aggregation_between_processes_matches_the_simulation(tmp_path: Path, privacy: bool) -> None:
    job = secure_job(tmp_path, privacy=privacy)
    digest, run = run_network(tmp_path, job, timeout=180)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["secagg"]["survivors"] for r in records] == [3, 3]
    assert all(r["completed"] and "secagg_clipped" in r["train_metrics"] for r in records)
    expected = simulate(load_job(job))
    assert digest == expected.digest
    if privacy:
        assert [r["epsilon"] for r in records] == pytest.approx([r.epsilon for r in expected.records])
        assert all("noise_multiplier" in r["secagg"] for r in records)
