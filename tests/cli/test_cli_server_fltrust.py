"""FLTrust under `fedra server`: the server trains on its own root data each round, over real gRPC.

Root data: `strategy.root_size` examples drawn with the job's seed from the job dataset's training split
(what `fedra simulate` draws from), or from `fedra server --root-data FILE.npz`; too few is an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fedra.data import FederatedData
from fedra.errors import ConfigError, DatasetError
from fedra.job import load_job
from fedra.runtime import RootTrainer, model_digest, root_dataset
from fedra.simulation import load_data, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transport"))
from net_helpers import TASK, run_network, write_job

ROOT_SIZE = 60

#: softmax_task.py, but the client named in $FEDRA_TEST_FLIP_CLIENT sends its update reversed and scaled
#: by $FEDRA_TEST_FLIP: against the root direction, so FLTrust must give it trust 0 whatever the scale.
FLIPPING = TASK.read_text() + '''

_honest_train = train


def train(m, data, config):  # type: ignore[no-redef,no-untyped-def]
    start = {k: v.copy() for k, v in m.items()}
    out = _honest_train(m, data, config)
    if config["client_id"] == os.environ.get("FEDRA_TEST_FLIP_CLIENT"):
        scale = np.float32(os.environ["FEDRA_TEST_FLIP"])
        for k in m:
            m[k][...] = start[k] - scale * (m[k] - start[k])
    return out
'''


def fltrust_job(tmp_path: Path, *, rounds: int, seed: int, root_size: int = ROOT_SIZE,
                module: str | None = None, aggregator: str = "fltrust") -> Path:
    job = write_job(tmp_path, name="fltrust", rounds=rounds, seed=seed)
    text = job.read_text().replace("[strategy]\n", f'[strategy]\naggregator = "{aggregator}"\n'
                                                   f"root_size = {root_size}\n")
    if module is not None:
        text = text.replace(f'module = "{TASK}"', f'module = "{module}"')
    job.write_text(text + "lr = 0.1\n")
    return job


def data_of(job: Path) -> FederatedData:
    return load_data(load_job(job))


def rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


# -- the root data ------------------------------------------------------------------------------------------

def test_root_data_is_root_size_training_examples_drawn_with_the_job_seed(tmp_path: Path) -> None:
    data = data_of(fltrust_job(tmp_path, rounds=1, seed=0))
    root = root_dataset(data.partitions, ROOT_SIZE, 7, source="training split")
    again = root_dataset(data.partitions, ROOT_SIZE, 7, source="training split")
    other = root_dataset(data.partitions, ROOT_SIZE, 8, source="training split")
    assert len(root.y) == ROOT_SIZE and root.num_classes == data.test.num_classes
    assert np.array_equal(root.x, again.x) and np.array_equal(root.y, again.y)
    assert not np.array_equal(root.x, other.x)
    training = set().union(*(rows(p.x) for p in data.partitions))
    assert rows(root.x) <= training and not rows(root.x) & rows(data.test.x)
    assert len(rows(root.x)) == ROOT_SIZE  # without replacement
    assert not any(rows(p.x).isdisjoint(rows(root.x)) for p in data.partitions)  # drawn across all clients


def test_more_root_examples_than_the_server_has_is_a_clear_error(tmp_path: Path) -> None:
    data = data_of(fltrust_job(tmp_path, rounds=1, seed=0))
    total = sum(len(p.y) for p in data.partitions)
    assert len(root_dataset(data.partitions, total, 0, source="all").y) == total
    with pytest.raises(ConfigError, match=rf"root_size = {total + 1}, but the server's root data "
                                          rf"\(training\) has {total} examples.*--root-data"):
        root_dataset(data.partitions, total + 1, 0, source="training")
    with pytest.raises(ConfigError, match="has 0 examples"):
        root_dataset([], 1, 0, source="nothing")


def test_the_root_trainer_trains_on_the_root_data_seeded_by_the_round(tmp_path: Path) -> None:
    from fedra.app import UserApp

    job = load_job(fltrust_job(tmp_path, rounds=1, seed=0))
    data = load_data(job)
    root = root_dataset(data.partitions, ROOT_SIZE, 0, source="training split")
    seen: list[int] = []

    def partition(cid: str):  # type: ignore[no-untyped-def]
        seen.append(len(root.y))
        assert cid == "__root__"
        return root

    trainer = RootTrainer(UserApp(job.module_path(), framework="numpy", partitions=partition), seed=0,
                          client_config=job.client.as_config())
    start = UserApp(job.module_path(), framework="numpy", partitions=partition).init_arrays(0)
    first, same, later = trainer(start, 1), trainer(start, 1), trainer(start, 2)
    assert seen == [ROOT_SIZE]  # the root data, prepared once
    assert model_digest(first) == model_digest(same) != model_digest(later)  # the round seeds the shuffle
    assert model_digest(first) != model_digest(start)  # it trained


# -- `fedra server` refuses before it listens -------------------------------------------------------------

def _refused(cli, job: Path, run: Path, *extra: str | Path):  # type: ignore[no-untyped-def]
    result = cli("server", job, "--insecure", "--bind", "127.0.0.1:0", "--run-dir", run, *extra)
    assert not (run / "metrics.jsonl").exists()
    return result


def test_the_server_without_enough_root_data_fails_at_start(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    job = fltrust_job(tmp_path, rounds=1, seed=0, root_size=100_000)
    result = _refused(cli, job, tmp_path / "run")
    assert result.exit_code == ConfigError.exit_code
    assert "strategy.root_size = 100000" in result.stderr
    assert "the training split of dataset 'digits'" in result.stderr


def test_bad_root_data_files_fail_at_start(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    job = fltrust_job(tmp_path, rounds=1, seed=0)
    missing = _refused(cli, job, tmp_path / "r1", "--root-data", tmp_path / "nope.npz")
    assert missing.exit_code == DatasetError.exit_code
    assert "--root-data" in missing.stderr and "expected an .npz file with arrays 'x' and 'y'" in missing.stderr

    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((ROOT_SIZE, 8), np.float32), y=np.zeros(ROOT_SIZE, np.int64))
    shaped = _refused(cli, job, tmp_path / "r2", "--root-data", flat)
    assert shaped.exit_code == DatasetError.exit_code and "expected features of shape (N, 64)" in shaped.stderr

    few = tmp_path / "few.npz"
    np.savez(few, x=np.zeros((ROOT_SIZE - 1, 64), np.float32), y=np.zeros(ROOT_SIZE - 1, np.int64))
    small = _refused(cli, job, tmp_path / "r3", "--root-data", few)
    assert small.exit_code == ConfigError.exit_code
    assert f"root_size = {ROOT_SIZE}, but the server's root data (--root-data {few}) has {ROOT_SIZE - 1}" \
        in " ".join(small.stderr.split())

    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((ROOT_SIZE, 64), np.float32), y=np.full(ROOT_SIZE, 10, np.int64))
    assert _refused(cli, job, tmp_path / "r4", "--root-data", labels).exit_code == DatasetError.exit_code

    mean = fltrust_job(tmp_path, rounds=1, seed=0, aggregator="mean")
    unused = _refused(cli, mean, tmp_path / "r5", "--root-data", few)
    assert unused.exit_code == ConfigError.exit_code and "only strategy.aggregator = 'fltrust'" in unused.stderr


# -- over gRPC on loopback ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_fltrust_job_over_grpc_trains_the_root_model_and_matches_the_simulation(tmp_path: Path) -> None:
    job = fltrust_job(tmp_path, rounds=3, seed=11)
    digest, run = run_network(tmp_path, job)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(r["completed"] and r["accepted"] == 3 for r in records)
    assert 'aggregator = "fltrust"' in (run / "job.toml").read_text()
    # the same root draw and root seeds as `fedra simulate`: bit-identical; and FLTrust moved the model
    # somewhere else than the plain mean would have
    assert digest == simulate(load_job(job)).digest
    (tmp_path / "mean").mkdir()
    mean = fltrust_job(tmp_path / "mean", rounds=3, seed=11, aggregator="mean")
    assert digest != simulate(load_job(mean)).digest


@pytest.mark.slow
def test_fltrust_over_grpc_gives_no_weight_to_an_update_against_the_root_direction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "flipping_task.py"
    module.write_text(FLIPPING)
    job = fltrust_job(tmp_path, rounds=2, seed=5, module=str(module))
    spec = load_job(job)
    # the server's own clean data: here exactly the draw `fedra simulate` makes, so the runs compare
    root = root_dataset(load_data(spec).partitions, ROOT_SIZE, 5, source="training split")
    root_file = tmp_path / "root.npz"
    np.savez(root_file, x=root.x, y=root.y)
    flip = {"FEDRA_TEST_FLIP_CLIENT": "client-0002", "FEDRA_TEST_FLIP": "5"}
    digest, run = run_network(tmp_path, job, "--root-data", root_file, env=flip)
    assert all(json.loads(line)["accepted"] == 3 for line in (run / "metrics.jsonl").read_text().splitlines())

    def simulated(scale: str, aggregator: str = "fltrust") -> str:
        monkeypatch.setenv("FEDRA_TEST_FLIP_CLIENT", "client-0002")
        monkeypatch.setenv("FEDRA_TEST_FLIP", scale)  # the simulation's workers fork with it
        return simulate(spec.model_copy(update={"strategy": spec.strategy.model_copy(
            update={"aggregator": aggregator})})).digest

    # the attacker's trust is 0: ten times its update changes nothing, over the network or simulated
    assert digest == simulated("5") == simulated("50")
    # and the attack does bite where nothing weighs it against the root model
    assert simulated("5", "mean") != simulated("50", "mean")
    honest = tmp_path / "honest"
    honest.mkdir()
    assert digest != simulate(load_job(fltrust_job(honest, rounds=2, seed=5))).digest
