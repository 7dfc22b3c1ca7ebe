"""Client-level DP wired through the job spec, the round driver, the client and the checkpoint.

Simulated digits jobs check what a user sees (per-round epsilon, the budget stop, resume); the driver on
an in-memory transport checks the plumbing (no noise = plain FedAvg on deltas), the noise actually added,
client-side clipping as the server sees it, and local DP.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import Result

from fedra.errors import ConfigError, JobSpecError
from fedra.job import JobSpec, parse_job
from fedra.privacy import Accountant, DPConfig, DPFedAvg, global_norm
from fedra.records import Message, Scalar, decode_message, encode_message
from fedra.runtime import (
    CheckpointStore,
    DriverConfig,
    RoundDriver,
    RoundPayload,
    RunResult,
    SqlStateStore,
    TaskResult,
    model_digest,
    run_task,
)
from fedra.simulation import simulate
from fedra.strategy import Aggregator, FractionSampler, ServerOptimizer, Strategy
from fedra.strategy._optimizer import OptimizerKind
from fedra.transport import FunctionTransport, Reply, Task, TaskBatch, Transport

SIM = Path(__file__).parent.parent / "simulation"  # softmax_task.py: a 650-parameter numpy model
DELTA = 1e-5


def dp_job(privacy: Mapping[str, object] | None = None, **over: object) -> JobSpec:
    """A small digits job (10 clients, 3 rounds) with ``[privacy]``; ``section__field=value`` overrides."""
    spec: dict[str, dict[str, object]] = {
        "job": {"name": "dp", "module": "softmax_task.py", "rounds": 3, "seed": 4},
        "data": {"dataset": "digits", "partition": "iid", "num_clients": 10},
        "strategy": {"fraction": 0.5},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "simulation": {"workers": 1},
        "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": DELTA, "noise_seed": "job",
                    **(privacy or {})},
    }
    for key, value in over.items():
        section, field = key.split("__")
        spec[section][field] = value
    return parse_job(spec, base_dir=SIM)


def epsilons(result: RunResult) -> list[float]:
    out = []
    for rec in result.records:
        assert rec.epsilon is not None and rec.delta == DELTA
        out.append(rec.epsilon)
    return out


def poisson_epsilons(rounds: int, *, z: float = 1.0, q: float = 0.5) -> list[float]:
    """The epsilon after each round from an accountant built here, independently of the driver."""
    acc = Accountant(sampling="poisson", backend="rdp")
    out = []
    for _ in range(rounds):
        acc.step(noise_multiplier=z, sampling_rate=q)
        out.append(acc.epsilon(DELTA))
    return out


# -- simulated jobs ------------------------------------------------------------------------------------

def test_each_round_reports_the_epsilon_an_independent_accountant_computes() -> None:
    result = simulate(dp_job())
    assert [r.round for r in result.records] == [1, 2, 3] and result.stop_reason is None
    assert epsilons(result) == pytest.approx(poisson_epsilons(3), rel=1e-12)
    assert epsilons(result) == sorted(epsilons(result)) and epsilons(result)[0] > 0
    # Poisson sampling: each client w.p. 0.5, so cohorts vary; every sampled client's reply is used
    assert all(r.completed and r.accepted == r.sampled for r in result.records)
    row = result.records[0].to_json()
    assert row["epsilon"] == result.records[0].epsilon and row["delta"] == DELTA


def test_a_seeded_private_run_is_bit_identical_whatever_the_worker_count() -> None:
    one = simulate(dp_job())
    two = simulate(dp_job(simulation__workers=2))
    assert one.digest == two.digest
    assert simulate(dp_job(job__seed=5)).digest != one.digest


def test_the_job_stops_before_the_round_that_would_exceed_max_epsilon() -> None:
    eps = poisson_epsilons(6)
    budget = (eps[2] + eps[3]) / 2  # three rounds fit, the fourth would not
    result = simulate(dp_job({"max_epsilon": budget}, job__rounds=6))
    assert [r.round for r in result.records] == [1, 2, 3]
    assert epsilons(result)[-1] <= budget < eps[3]
    assert result.stop_reason is not None and "max_epsilon" in result.stop_reason
    assert result.records[-1].stop_reason == result.stop_reason
    assert result.state.round == 3


def test_a_resumed_run_reports_the_same_epsilons_and_model_as_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = simulate(dp_job(job__rounds=4), run_dir=tmp_path / "whole")
    run = tmp_path / "interrupted"
    first = simulate(dp_job(job__rounds=2), run_dir=run)  # stops after round 2, as if killed there
    rest = simulate(dp_job(job__rounds=4), run_dir=run)  # resumes from the checkpoint of round 2
    assert [r.round for r in rest.records] == [3, 4]
    assert epsilons(first) + epsilons(rest) == epsilons(whole)
    assert rest.digest == whole.digest
    saved = json.loads((run / "checkpoint" / "extra-r000004.json").read_text())
    assert json.loads(saved["privacy"])["dpfedavg"]["accountant"]  # the accountant is in the checkpoint


def test_fedra_simulate_ends_normally_with_a_message_when_the_budget_is_spent(
        cli: Any, tmp_path: Path) -> None:
    budget = sum(poisson_epsilons(2)) / 2  # between round 1's epsilon and round 2's
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "dp-cli"
module = "{SIM / 'softmax_task.py'}"
rounds = 5
seed = 1
[data]
num_clients = 10
[strategy]
fraction = 0.5
[simulation]
workers = 1
[privacy]
clip_norm = 1.0
noise_multiplier = 1.0
delta = {DELTA}
max_epsilon = {budget!r}
""")
    result: Result = cli("simulate", job, "--output", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "stopped early: privacy budget" in result.stdout
    assert "epsilon" in result.stdout
    run = next((tmp_path / "runs").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1]
    assert rows[0]["epsilon"] <= budget and "max_epsilon" in rows[0]["stop_reason"]


# -- the driver on an in-memory transport ---------------------------------------------------------------

CLIENTS = [f"c{i}" for i in range(8)]
MODEL: dict[str, np.ndarray] = {"w": np.linspace(-1.0, 1.0, 60, dtype=np.float32).reshape(12, 5), "b": np.zeros(5, np.float64)}


def reply(batch: TaskBatch, task: Task, arrays: Mapping[str, np.ndarray], examples: int = 10) -> bytearray:
    return encode_message(Message(arrays=arrays, meta={"task_id": task.task_id, "nonce": task.nonce,
                                                       "num_examples": examples}))


def pull(batch: TaskBatch, task: Task) -> bytearray:
    """A fake client whose update moves each parameter by a client- and round-dependent amount."""
    params = decode_message(batch.payload).arrays
    k = int(task.client_id[1:]) + 1
    return reply(batch, task, {"w": (params["w"] + np.float32(0.05 * k * batch.round)).astype(np.float32),
                               "b": params["b"] - 0.01 * k * np.arange(5)})


def dp(config: DPConfig, clients: int = len(CLIENTS), rounds: int = 3) -> DPFedAvg:
    return DPFedAvg(config, rounds=rounds, population=clients, clients_per_round=clients)


def fixed(**kw: Any) -> DPConfig:
    return DPConfig(delta=DELTA, sampling="fixed", **kw)


@pytest.mark.parametrize("optimizer", ["fedavg", "fedadam"])
def test_without_noise_and_clipping_the_dp_path_is_plain_fedavg_on_deltas(optimizer: OptimizerKind) -> None:
    strategy = Strategy(optimizer=ServerOptimizer(optimizer, lr=1.0 if optimizer == "fedavg" else 0.1))
    def run(privacy: DPFedAvg | None) -> RunResult:
        return RoundDriver(strategy=strategy, transport=FunctionTransport(CLIENTS, pull), initial_params=MODEL,
                           config=DriverConfig(rounds=3, seed=1), privacy=privacy, noise_seed=0).run()
    plain = run(None)
    private = run(dp(fixed(clip_norm=1e9, noise_multiplier=0.0)))
    for name in MODEL:
        np.testing.assert_allclose(private.params[name], plain.params[name], rtol=1e-5, atol=1e-6)
        assert private.params[name].dtype == MODEL[name].dtype
    assert all(r.epsilon == float("inf") for r in private.records)  # no noise: no privacy, and it says so


def test_the_server_clips_each_delta_and_divides_by_the_cohort_size() -> None:
    c = 0.1
    result = RoundDriver(strategy=Strategy(), transport=FunctionTransport(CLIENTS, pull), initial_params=MODEL,
                         config=DriverConfig(rounds=1), privacy=dp(fixed(clip_norm=c, noise_multiplier=0.0))).run()
    deltas = []
    for task in (Task(f"r1.{i}", cid, "n") for i, cid in enumerate(CLIENTS)):
        batch = TaskBatch("train", 1, encode_message(Message(arrays=MODEL, meta={})), (task,))
        sent = decode_message(pull(batch, task)).arrays
        delta = {k: np.asarray(sent[k], np.float64) - MODEL[k] for k in MODEL}
        assert global_norm(delta) > 3 * c  # every client is clipped
        deltas.append({k: v * (c / global_norm(delta)) for k, v in delta.items()})
    for name in MODEL:
        expected = MODEL[name] + np.mean([d[name] for d in deltas], axis=0)
        np.testing.assert_allclose(result.params[name], expected, rtol=1e-6, atol=1e-7)
    moved = {k: np.asarray(result.params[k], np.float64) - MODEL[k] for k in MODEL}
    assert global_norm(moved) <= c * (1 + 1e-6)


def test_the_noise_added_to_the_model_has_std_z_c_over_m() -> None:
    m, z, c = 10, 1.5, 2.0
    model: dict[str, np.ndarray] = {"w": np.zeros(200_000, np.float64), "v": np.zeros((100, 100), np.float32)}
    clients = [f"c{i}" for i in range(m)]

    def unchanged(batch: TaskBatch, task: Task) -> bytearray:
        return reply(batch, task, decode_message(batch.payload).arrays)

    result = RoundDriver(strategy=Strategy(), transport=FunctionTransport(clients, unchanged),
                         initial_params=model, config=DriverConfig(rounds=1),
                         privacy=dp(fixed(clip_norm=c, noise_multiplier=z), clients=m)).run()
    noise = np.concatenate([result.params["w"], result.params["v"].astype(np.float64).ravel()])
    assert noise.std() == pytest.approx(z * c / m, rel=0.02)
    assert abs(noise.mean()) < 5 * (z * c / m) / np.sqrt(noise.size)
    assert result.params["v"].dtype == np.float32


class Recording(Transport):
    """An instrumented server side: the norm of every reply's delta against the round's global model."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.norms: list[float] = []
        self.deltas: list[dict[str, np.ndarray]] = []

    def clients(self) -> list[str]:
        return list(self.inner.clients())

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        sent = decode_message(batch.payload).arrays
        for r in self.inner.exchange(batch, timeout=timeout):
            assert r.payload is not None
            got = decode_message(r.payload).arrays
            delta = {k: np.asarray(got[k], np.float64) - sent[k] for k in sent}
            self.deltas.append(delta)
            self.norms.append(global_norm(delta))
            yield r


class FarTrainer:
    """A ClientApp whose training moves the model far (norm ~ 30 per client) or not at all."""

    def __init__(self, move: float) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.move = move

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.arrays.items()}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = {k: np.array(v) for k, v in arrays.items()}

    def train(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> TaskResult:
        k = int(client_id[1:]) + 1
        for v in self.arrays.values():
            v += self.move * k
        return TaskResult(num_examples=10, metrics={})

    def evaluate(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> TaskResult:
        return TaskResult(num_examples=10, metrics={})


def run_clients(config: DPConfig, *, move: float, model: Mapping[str, np.ndarray] = MODEL,
                rounds: int = 2) -> tuple[Recording, RunResult]:
    app = FarTrainer(move)

    def client(batch: TaskBatch, task: Task) -> bytearray:
        return run_task(app, RoundPayload.decode(batch.payload), task)

    wire = Recording(FunctionTransport(CLIENTS, client))
    result = RoundDriver(strategy=Strategy(), transport=wire, initial_params=model,
                         config=DriverConfig(rounds=rounds), privacy=dp(config, rounds=rounds)).run()
    return wire, result


def test_with_client_side_clipping_the_server_never_sees_a_delta_above_the_clip_norm() -> None:
    c = 0.5
    wire, result = run_clients(fixed(clip_norm=c, noise_multiplier=0.5, mode="client"), move=0.5)
    assert len(wire.norms) == 2 * len(CLIENTS)
    # float32 arrays: global + clipped delta is rounded once on the client, hence the 1e-5
    assert max(wire.norms) <= c * (1 + 1e-5)
    assert min(wire.norms) > 0.99 * c  # each was far above c before clipping: clipped, not dropped
    # the same clients in server mode send their raw deltas: the instrument would have caught them
    raw, _ = run_clients(fixed(clip_norm=c, noise_multiplier=0.5, mode="server"), move=0.5)
    assert max(raw.norms) > 10 * c
    assert all(r.completed for r in result.records)


def test_in_local_mode_the_client_adds_the_noise_and_the_accountant_charges_local_rounds() -> None:
    z, c = 2.0, 0.1
    model = {"w": np.zeros(5_000, np.float64)}
    wire, result = run_clients(DPConfig(delta=DELTA, clip_norm=c, noise_multiplier=z, mode="local"),
                               move=0.0, model=model)
    seen = np.concatenate([d["w"] for d in wire.deltas])  # the clients trained nothing: all of it is noise
    assert seen.std() == pytest.approx(z * c, rel=0.03)
    assert len({float(d["w"][0]) for d in wire.deltas}) == len(wire.deltas)  # independent per client
    # the server divides by the number received and adds nothing: the model moved by the mean noise
    round_one = np.mean([d["w"] for d in wire.deltas[:len(CLIENTS)]], axis=0)
    round_two = np.mean([d["w"] for d in wire.deltas[len(CLIENTS):]], axis=0)
    np.testing.assert_allclose(result.params["w"], round_one + round_two, atol=1e-12)
    acc = Accountant(sampling="local")
    expected = []
    for _ in range(2):
        acc.step(noise_multiplier=z)
        expected.append(acc.epsilon(DELTA))
    assert [r.epsilon for r in result.records] == pytest.approx(expected, rel=1e-12)


def test_client_mode_without_a_clip_norm_in_the_task_is_refused_by_the_client() -> None:
    app = FarTrainer(1.0)
    payload = encode_message(Message(arrays=MODEL, config={"round_seed": 1, "dp_mode": "client"},
                                     meta={"kind": "train", "round": 1}))
    with pytest.raises(ConfigError, match="dp_clip_norm"):
        run_task(app, RoundPayload.decode(payload), Task("r1.0", "c0", "n"))


def test_a_round_below_the_quorum_is_still_charged() -> None:
    def silent(batch: TaskBatch, task: Task) -> bytearray | None:
        return None if task.client_id != "c0" else pull(batch, task)

    privacy = dp(fixed(clip_norm=1.0, noise_multiplier=1.0))
    result = RoundDriver(strategy=Strategy(), transport=FunctionTransport(CLIENTS, silent), initial_params=MODEL,
                         config=DriverConfig(rounds=2, min_replies=2), privacy=privacy).run()
    assert not any(r.completed for r in result.records)
    assert privacy.accountant.steps == 2 and result.records[-1].epsilon == privacy.epsilon() > 0
    assert model_digest(result.params) == model_digest(MODEL)


# -- the checkpoint ---------------------------------------------------------------------------------------

def private_driver(store: Any, rounds: int, *, max_epsilon: float | None = None) -> RoundDriver:
    config = DPConfig(delta=DELTA, clip_norm=0.2, noise_multiplier=0.8, max_epsilon=max_epsilon,
                      adaptive=None)
    privacy = DPFedAvg(config, rounds=rounds, population=len(CLIENTS), sampling_rate=0.5)
    return RoundDriver(strategy=Strategy(sampler=FractionSampler(0.5, poisson=True)),
                       transport=FunctionTransport(CLIENTS, pull), initial_params=MODEL,
                       config=DriverConfig(rounds=rounds, seed=3), checkpoints=store, privacy=privacy)


@pytest.mark.parametrize("kind", ["files", "sqlite"])
def test_secret_noise_entropy_is_checkpointed_so_a_resume_repeats_the_same_noise(tmp_path: Path, kind: str
                                                                                ) -> None:
    def store(where: Path) -> Any:
        return CheckpointStore(where) if kind == "files" else SqlStateStore(where / "state.db")

    private_driver(store(tmp_path / "a"), rounds=2).run()  # noise_seed None: 128 secret bits
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same checkpoint of round 2, twice
    one = private_driver(store(tmp_path / "a"), rounds=4).run()
    two = private_driver(store(tmp_path / "b"), rounds=4).run()
    assert [r.round for r in one.records] == [3, 4]
    assert one.digest == two.digest and [r.epsilon for r in one.records] == [r.epsilon for r in two.records]
    fresh = private_driver(None, rounds=4).run()  # other secret bits: other noise
    assert fresh.digest != one.digest


def test_a_resumed_run_that_has_spent_its_budget_runs_no_more_rounds(tmp_path: Path) -> None:
    acc = Accountant(sampling="poisson")
    acc.step(noise_multiplier=0.8, sampling_rate=0.5, count=2)
    budget = acc.epsilon(DELTA) * 1.0001  # two rounds fit, a third does not
    first = private_driver(CheckpointStore(tmp_path), rounds=2, max_epsilon=budget).run()
    assert first.stop_reason is None and len(first.records) == 2
    again = private_driver(CheckpointStore(tmp_path), rounds=5, max_epsilon=budget).run()
    assert again.records == [] and again.stop_reason is not None and "round 3" in again.stop_reason
    assert again.digest == first.digest


def test_a_private_job_refuses_to_resume_from_a_checkpoint_written_without_privacy(tmp_path: Path) -> None:
    RoundDriver(strategy=Strategy(), transport=FunctionTransport(CLIENTS, pull), initial_params=MODEL,
                config=DriverConfig(rounds=1), checkpoints=CheckpointStore(tmp_path)).run()
    with pytest.raises(ConfigError, match="without differential privacy"):
        private_driver(CheckpointStore(tmp_path), rounds=3)


# -- the job spec -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("privacy", "field", "says"), [
    ({"clip_norm": 0}, "privacy.clip_norm", "greater than 0"),
    ({"clip_norm": float("nan")}, "privacy.clip_norm", "finite"),
    ({"delta": 1.5}, "privacy.delta", "less than 1"),
    ({"noise_multiplier": -1}, "privacy.noise_multiplier", "greater than or equal to 0"),
    ({"target_epsilon": 3.0}, "privacy", "exactly one of them"),
    ({"mode": "central"}, "privacy.mode", "'server', 'client' or 'local'"),
    ({"sampling": "fixed", "accountant": "pld"}, "privacy", "expected 'rdp' with sampling = 'fixed'"),
    ({"mode": "local", "adaptive": {}}, "privacy", "no adaptive clipping with mode = 'local'"),
    ({"adaptive": {"target_quantile": 1.0}}, "privacy.adaptive.target_quantile", "less than 1"),
    ({"noise_seed": "zero"}, "privacy.noise_seed", "'random' or 'job'"),
    ({"epsilon": 1.0}, "privacy.epsilon", "unknown field"),
])
def test_the_job_spec_rejects_bad_privacy_values_naming_field_and_value(
        privacy: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(JobSpecError) as info:
        dp_job(privacy)
    text = str(info.value)
    assert f"{field}: " in text and says in text


def test_the_job_spec_refuses_privacy_with_a_robust_aggregator_and_says_why() -> None:
    with pytest.raises(JobSpecError, match=r"expected aggregator = 'mean'.*sensitivity"):
        dp_job(strategy__aggregator="median")


def test_without_privacy_the_job_has_none_and_records_carry_no_privacy_fields() -> None:
    spec = dp_job()
    plain = parse_job({k: v for k, v in spec.model_dump().items() if k != "privacy"}, base_dir=SIM)
    assert plain.privacy is None and spec.privacy is not None
    assert spec.privacy.dp_config().sampling == "poisson"
    rec = RoundDriver(strategy=Strategy(aggregator=Aggregator()), transport=FunctionTransport(CLIENTS, pull),
                      initial_params=MODEL, config=DriverConfig(rounds=1)).run().records[0]
    assert rec.epsilon is None and "epsilon" not in rec.to_json() and "stop_reason" not in rec.to_json()


# -- the same driver over gRPC ------------------------------------------------------------------------------

def test_a_private_networked_run_equals_the_simulation_bit_for_bit() -> None:
    pytest.importorskip("grpc")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transport"))
    from net_helpers import run_in_threads

    spec = dp_job({"mode": "client", "clip_norm": 0.05, "adaptive": {"target_quantile": 0.5, "count_stddev": 1.0}},
                  data__num_clients=4)
    expected = simulate(spec)
    result = run_in_threads(spec)
    assert [r.accepted for r in result.records] == [r.accepted for r in expected.records]
    assert sum(r.accepted for r in result.records) > 0
    assert [r.clip_norm for r in result.records] == [r.clip_norm for r in expected.records]
    assert len({r.clip_norm for r in result.records}) > 1  # adaptive clipping moved the norm
    assert result.digest == expected.digest


@pytest.mark.parametrize("mode", ["server", "local"])
def test_accumulate_is_prepare_then_sum_without_the_copies(mode: str) -> None:
    rng = np.random.default_rng(7)
    config = DPConfig(delta=DELTA, clip_norm=3.0, noise_multiplier=1.0, mode=mode)  # type: ignore[arg-type]
    privacy = DPFedAvg(config, rounds=1, population=10, sampling_rate=0.5)
    updates = [{"a": rng.standard_normal((300, 300)) * s, "b": rng.standard_normal(7) * s}
               for s in (0.001, 0.5, 10.0)]  # within the norm, near it, far above it
    streamed = {"a": np.zeros((300, 300)), "b": np.zeros(7)}
    within = [privacy.accumulate(streamed, u) for u in updates]
    reference = {"a": np.zeros((300, 300)), "b": np.zeros(7)}
    bits = []
    for u in updates:
        clipped, ok = privacy.prepare(u)
        bits.append(ok)
        for k in reference:
            reference[k] += clipped[k]
    assert within == bits == ([True, False, False] if mode == "server" else [True] * 3)
    for k in reference:
        np.testing.assert_allclose(streamed[k], reference[k], rtol=1e-13, atol=1e-15)
