"""``simulate(job)``: a job spec run on virtual clients, through the same round driver as deployments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, final

import numpy as np

from fedra.app import UserApp
from fedra.data import Dataset, FederatedData, load_federated
from fedra.job import JobSpec
from fedra.privacy import DPFedAvg
from fedra.records import Scalar
from fedra.runtime import CheckpointStore, DriverConfig, Observer, RoundDriver, RunResult
from fedra.simulation._pool import ProcessPoolTransport
from fedra.strategy import Aggregator, FractionSampler, ServerOptimizer, Strategy

__all__ = ["build_privacy", "build_strategy", "client_ids", "driver_config", "load_data", "noise_seed", "simulate"]


def build_strategy(job: JobSpec) -> Strategy:
    """The strategy a job spec describes."""
    s = job.strategy
    p = job.privacy
    # DP-FedAvg's accountant assumes Poisson sampling unless told "fixed": sample the way it counts
    poisson = p is not None and p.mode != "local" and p.sampling == "poisson"
    return Strategy(
        sampler=FractionSampler(fraction=s.fraction, min_clients=s.min_clients, poisson=poisson),
        aggregator=Aggregator(kind=s.aggregator, trim_fraction=s.trim_fraction,
                              num_byzantine=s.num_byzantine, num_selected=s.num_selected),
        optimizer=ServerOptimizer(kind=s.optimizer, lr=s.server_lr, momentum=s.momentum,
                                  beta1=s.beta1, beta2=s.beta2, tau=s.tau),
    )


def build_privacy(job: JobSpec) -> DPFedAvg | None:
    """The job's client-level DP (``None`` without ``[privacy]``); the population is ``data.num_clients``.

    Under Poisson sampling each client takes part with probability ``strategy.fraction``; under fixed
    sampling the cohort is the sampler's size out of the whole population. Calibrating
    ``target_epsilon`` happens here, so an unreachable target fails before any client starts.
    """
    if job.privacy is None:
        return None
    n = job.data.num_clients
    s = job.strategy
    config = job.privacy.dp_config()
    if config.sampling == "poisson" and config.mode != "local":
        return DPFedAvg(config, rounds=job.job.rounds, population=n, sampling_rate=s.fraction)
    cohort = FractionSampler(fraction=s.fraction, min_clients=s.min_clients).size(n)
    return DPFedAvg(config, rounds=job.job.rounds, population=n, clients_per_round=cohort)


def noise_seed(job: JobSpec) -> int | None:
    """The DP noise's seed: ``job.seed`` with ``privacy.noise_seed = "job"``, else ``None`` (secret entropy)."""
    return job.job.seed if job.privacy is not None and job.privacy.noise_seed == "job" else None


def driver_config(job: JobSpec) -> DriverConfig:
    s = job.strategy
    return DriverConfig(rounds=job.job.rounds, seed=job.job.seed, min_replies=s.min_replies,
                        round_timeout=s.round_timeout, evaluate_every=s.evaluate_every,
                        client_config=job.client.as_config())


def load_data(job: JobSpec) -> FederatedData:
    d = job.data
    path = d.path
    if path is not None and not Path(path).is_absolute():
        path = str(Path(job.base_dir) / path)
    extra: dict[str, object] = {}
    if d.dataset == "synthetic":
        extra = {"synthetic_alpha": d.synthetic_alpha, "synthetic_beta": d.synthetic_beta}
    return load_federated(d.dataset, num_clients=d.num_clients, partition=d.partition,
                          alpha=d.alpha if d.partition == "dirichlet" else None,
                          shards_per_client=d.shards_per_client, seed=job.job.seed, path=path,
                          test_fraction=d.test_fraction, **extra)


def client_ids(n: int) -> list[str]:
    width = max(4, len(str(n - 1)))
    return [f"client-{i:0{width}d}" for i in range(n)]


@final
class _SimApp:
    """The user's app in a worker, with the federation's partitions and the held-out test set."""

    def __init__(self, module: str, framework: str, data: FederatedData, ids: Sequence[str],
                 max_cached: int) -> None:
        index = {cid: i for i, cid in enumerate(ids)}
        self._test = data.test
        self._app = UserApp(module, framework=framework, max_cached=max_cached,
                            partitions=lambda cid: data.partitions[index[cid]])

    def get_arrays(self) -> dict[str, np.ndarray]:
        return self._app.get_arrays()

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._app.set_arrays(arrays)

    def train(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> Any:
        return self._app.train(client_id, config, seed)

    def evaluate(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> Any:
        return self._app.evaluate(client_id, config, seed)

    def init_arrays(self, seed: int) -> dict[str, np.ndarray]:
        return self._app.init_arrays(seed)

    def evaluate_central(self, config: Mapping[str, Any], seed: int) -> dict[str, Any]:
        test: Dataset = self._test
        return self._app.evaluate_on(self._app.data("__test__", test), config, seed)


def simulate(job: JobSpec, *, observers: Sequence[Observer] = (), run_dir: Path | None = None,
             data: FederatedData | None = None) -> RunResult:
    """Run ``job`` on virtual clients and return the final model, strategy state and per-round records.

    Workers are forked after the data are loaded, so they share its memory. With ``run_dir`` the driver
    checkpoints there after every round and resumes from a checkpoint it finds.
    """
    privacy = build_privacy(job)  # before the workers start: a bad [privacy] fails first
    fed = data if data is not None else load_data(job)
    ids = client_ids(len(fed.partitions))
    module = job.module_path()
    framework, max_cached = job.job.framework, job.simulation.max_cached_partitions
    def factory() -> _SimApp:
        return _SimApp(module, framework, fed, ids, max_cached)

    with ProcessPoolTransport(ids, factory, num_workers=job.simulation.workers) as pool:
        initial = pool.initial_arrays(job.job.seed)
        driver = RoundDriver(
            strategy=build_strategy(job), transport=pool, initial_params=initial, config=driver_config(job),
            evaluator=lambda params: pool.evaluate_central(params, seed=job.job.seed,
                                                           config=job.client.as_config()),
            observers=observers,
            checkpoints=CheckpointStore(run_dir / "checkpoint") if run_dir is not None else None,
            privacy=privacy, noise_seed=noise_seed(job),
        )
        return driver.run()
