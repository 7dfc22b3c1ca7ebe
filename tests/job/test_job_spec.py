"""The job spec: defaults, and a bad field fails before anything runs, named with value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedra.errors import JobSpecError
from fedra.job import load_job, parse_job

REPO = Path(__file__).resolve().parents[2]
BASE = {"job": {"module": "task.py", "rounds": 3}}


def problems(spec: dict) -> dict[str, str]:  # type: ignore[type-arg]
    with pytest.raises(JobSpecError) as info:
        parse_job(spec, source="t.toml")
    assert str(info.value).startswith("invalid job spec t.toml:")
    return dict(info.value.problems)


def test_defaults_fill_in_and_resolve() -> None:
    job = parse_job(BASE, base_dir="/tmp/x")
    assert job.data.dataset == "digits" and job.strategy.aggregator == "mean" and job.client.epochs == 1
    assert job.module_path() == "/tmp/x/task.py"
    assert parse_job({"job": {"module": "pkg.mod", "rounds": 1}}).module_path() == "pkg.mod"
    resolved = job.resolved()
    assert resolved["job"]["rounds"] == 3 and "base_dir" not in resolved
    assert parse_job(resolved, base_dir="/tmp/x") == job


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({"job": {"module": "t.py", "rounds": 0}}, "job.rounds", "greater than or equal to 1 (got 0)"),
        ({"job": {"module": "t.py", "rounds": 1, "colour": 1}}, "job.colour", "unknown field"),
        ({**BASE, "data": {"dataset": "cifar"}}, "data.dataset", "'digits', 'fashion_mnist' or 'synthetic' (got 'cifar')"),
        ({**BASE, "data": {"partition": "dirichlet"}}, "data", "needs alpha"),
        ({**BASE, "data": {"partition": "dirichlet", "alpha": -1}}, "data.alpha", "greater than 0 (got -1)"),
        ({**BASE, "data": {"dataset": "synthetic", "partition": "iid"}}, "data", "partition = \"natural\""),
        ({**BASE, "data": {"partition": "natural"}}, "data", "needs a dataset with users"),
        ({**BASE, "strategy": {"fraction": 1.5}}, "strategy.fraction", "less than or equal to 1 (got 1.5)"),
        ({**BASE, "strategy": {"optimizer": "adam"}}, "strategy.optimizer", "'fedavg', 'fedavgm', 'fedadam', 'fedyogi' or 'fedadagrad'"),
        ({**BASE, "strategy": {"min_clients": 50}}, "(top level)", "min_clients = 50 exceeds data.num_clients = 10"),
        ({**BASE, "strategy": {"aggregator": "krum", "num_byzantine": 4}}, "(top level)", "more than 2*num_byzantine+2"),
        ({**BASE, "client": {"lr": 0}}, "client.lr", "greater than 0 (got 0)"),
        ({**BASE, "client": {"extra": [1, 2]}}, "client", "extra client config 'extra'"),
        ({"data": {}}, "job", "Field required"),
    ],
)
def test_bad_fields_are_named_with_value_and_allowed(spec: dict, field: str, fragment: str) -> None:  # type: ignore[type-arg]
    found = problems(spec)
    assert field in found, found
    assert fragment in found[field], found[field]


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"job": {"module": "t.py", "rounds": -1}, "client": {"epochs": 0, "lr": -1}})
    assert set(found) >= {"job.rounds", "client.epochs", "client.lr"}


def test_extra_client_keys_pass_through_to_train() -> None:
    job = parse_job({**BASE, "client": {"hidden": 128, "dropout": 0.1}})
    assert job.client.as_config()["hidden"] == 128


def test_files_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(JobSpecError, match="not found"):
        load_job(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[job\nrounds = ")
    with pytest.raises(JobSpecError, match="not valid TOML"):
        load_job(bad)


def test_the_shipped_examples_are_valid() -> None:
    for path in sorted(REPO.glob("examples/*/*.toml")):
        job = load_job(path)
        assert Path(job.module_path()).is_file(), path
