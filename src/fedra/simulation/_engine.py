"""``simulate(job)``: a job spec run on virtual clients, through the same round driver as deployments.

With ``[attack]`` the simulation also plays the attackers (:mod:`fedra.simulation._adversary`); with
``[quarantine]`` the driver scores updates and quarantines repeat offenders, and the run's
:attr:`RunResult.summary` holds the quarantine report against the known attackers. FLTrust's server
training runs in a worker like the centralised evaluation, on a root dataset of ``strategy.root_size``
examples drawn (from ``job.seed``) from the clients' training data, as in Cao et al.'s experiments.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import numpy as np

from fedra.app import UserApp
from fedra.attacks import select_malicious
from fedra.data import Dataset, FederatedData, load_federated
from fedra.errors import TransportError
from fedra.job import JobSpec
from fedra.privacy import DPFedAvg
from fedra.records import Message, Scalar, decode_message, encode_message
from fedra.runtime import CheckpointStore, DriverConfig, Observer, RoundDriver, RunResult
from fedra.simulation._adversary import Adversary, poisoned_partition
from fedra.simulation._pool import ProcessPoolTransport
from fedra.strategy import (
    Aggregator,
    FractionSampler,
    QuarantinePolicy,
    ServerOptimizer,
    Strategy,
    quarantine_report,
)
from fedra.transport.base import Task, TaskBatch, Transport

if TYPE_CHECKING:
    from fedra.runtime import SecureAggregation

__all__ = ["ROOT_CLIENT", "build_privacy", "build_quarantine", "build_secure", "build_strategy", "client_ids", "driver_config", "load_data",
           "malicious_clients", "noise_seed", "simulate"]

#: the pseudo-client id under which a worker trains FLTrust's server model on the root dataset
ROOT_CLIENT = "__root__"


def build_strategy(job: JobSpec) -> Strategy:
    """The strategy a job spec describes."""
    s = job.strategy
    p = job.privacy
    # DP-FedAvg's accountant assumes Poisson sampling unless told "fixed": sample the way it counts
    poisson = p is not None and p.mode != "local" and p.sampling == "poisson"
    return Strategy(
        sampler=FractionSampler(fraction=s.fraction, min_clients=s.min_clients, poisson=poisson),
        aggregator=Aggregator(kind=s.aggregator, trim_fraction=s.trim_fraction,
                              num_byzantine=s.num_byzantine, num_selected=s.num_selected,
                              max_norm=s.max_norm, clip_tau=s.clip_tau, clip_iterations=s.clip_iterations),
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


def build_secure(job: JobSpec) -> SecureAggregation | None:
    """The job's secure aggregation settings (``None`` without ``[secagg]``), for the simulation and the server."""
    sa = job.secagg
    clip = job.secagg_clip()
    if sa is None or clip is None:
        return None
    from fedra.runtime import SecureAggregation

    return SecureAggregation(clip=clip, degree=sa.degree, threshold=sa.threshold, ring_bits=sa.ring_bits,
                             stage_timeout=sa.stage_timeout, max_weight=sa.max_weight)


def build_quarantine(job: JobSpec) -> QuarantinePolicy | None:
    """The job's quarantine policy (``None`` without ``[quarantine]``), for the simulation and the server."""
    return job.quarantine.policy() if job.quarantine is not None else None


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


def malicious_clients(job: JobSpec, ids: Sequence[str]) -> list[str]:
    """The clients that attack (none without ``[attack]``), chosen from ``job.seed``."""
    if job.attack is None:
        return []
    return select_malicious(ids, fraction=job.attack.fraction, seed=job.job.seed)


def _root_dataset(data: FederatedData, size: int, seed: int) -> Dataset:
    """FLTrust's root dataset: ``size`` examples drawn uniformly from the clients' training data."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xF17])))
    sizes = np.array([len(p.y) for p in data.partitions])
    picks = np.sort(rng.choice(int(sizes.sum()), size=min(size, int(sizes.sum())), replace=False))
    owner = np.searchsorted(np.cumsum(sizes), picks, side="right")
    offset = picks - np.concatenate([[0], np.cumsum(sizes)[:-1]])[owner]
    x = np.stack([data.partitions[o].x[i] for o, i in zip(owner, offset, strict=True)])
    y = np.array([data.partitions[o].y[i] for o, i in zip(owner, offset, strict=True)], dtype=np.int64)
    return Dataset(x, y, data.num_classes, f"{data.name}/root")


def _partitions(job: JobSpec, data: FederatedData, ids: Sequence[str]) -> dict[str, Dataset]:
    """Each client's training data (the attackers' poisoned under a data attack), and the root data."""
    parts = dict(zip(ids, data.partitions, strict=True))
    attack = job.attack.config() if job.attack is not None else None
    if attack is not None and attack.target == "data":
        index = {c: i for i, c in enumerate(ids)}
        for c in malicious_clients(job, ids):
            parts[c] = poisoned_partition(attack, parts[c], seed=job.job.seed, index=index[c])
    if job.strategy.aggregator == "fltrust":
        parts[ROOT_CLIENT] = _root_dataset(data, job.strategy.root_size, job.job.seed)
    return parts


@final
class _SimApp:
    """The user's app in a worker, with the federation's partitions and the held-out test set."""

    def __init__(self, module: str, framework: str, data: FederatedData, parts: Mapping[str, Dataset],
                 max_cached: int) -> None:
        self._test = data.test
        self._app = UserApp(module, framework=framework, max_cached=max_cached,
                            partitions=lambda cid: parts[cid])

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
    parts = _partitions(job, fed, ids)
    malicious = malicious_clients(job, ids)
    attack = job.attack.config() if job.attack is not None else None
    hook = (Adversary(attack, malicious, seed=job.job.seed)
            if attack is not None and attack.target == "model" and malicious else None)

    def factory() -> _SimApp:
        return _SimApp(module, framework, fed, parts, max_cached)

    secure = build_secure(job)
    with ProcessPoolTransport(ids, factory, num_workers=job.simulation.workers) as pool:
        initial = pool.initial_arrays(job.job.seed)
        # under secure aggregation the clients' protocol runs in this process, on what the workers trained
        transport: Transport = pool if secure is None else _secure_transport(pool)
        driver = RoundDriver(
            strategy=build_strategy(job), transport=transport, initial_params=initial, config=driver_config(job),
            evaluator=lambda params: pool.evaluate_central(params, seed=job.job.seed,
                                                           config=job.client.as_config()),
            observers=observers,
            checkpoints=CheckpointStore(run_dir / "checkpoint") if run_dir is not None else None,
            privacy=privacy, noise_seed=noise_seed(job),
            quarantine=build_quarantine(job),
            update_hook=hook,
            root_trainer=_root_trainer(pool, job) if job.strategy.aggregator == "fltrust" else None,
            secure=secure,
        )
        result = driver.run()
    summary: dict[str, Any] = dict(result.summary)
    if attack is not None:
        summary["attack"] = {"kind": attack.kind, "fraction": attack.fraction, "malicious": malicious}
    if job.quarantine is not None:
        summary["quarantine"] = quarantine_report(driver.quarantine_events, malicious=malicious).to_dict()
    return replace(result, summary=summary)


def _secure_transport(pool: ProcessPoolTransport) -> Transport:
    from fedra.runtime import SecureTransport

    return SecureTransport(pool)


def _root_trainer(pool: ProcessPoolTransport, job: JobSpec) -> Callable[[Mapping[str, np.ndarray], int],
                                                                        dict[str, np.ndarray]]:
    """FLTrust's server training: one task for :data:`ROOT_CLIENT`, run in a worker."""
    def train(params: Mapping[str, np.ndarray], rnd: int) -> dict[str, np.ndarray]:
        seed = int(np.random.SeedSequence([job.job.seed, rnd, 0xF17]).generate_state(1, np.uint32)[0])
        config: dict[str, Scalar] = {**job.client.as_config(), "round": rnd, "round_seed": seed}
        payload = encode_message(Message(arrays=params, config=config, meta={"kind": "train", "round": rnd}))
        task = Task(task_id=f"r{rnd}.root", client_id=ROOT_CLIENT, nonce=secrets.token_hex(8))
        for reply in pool.exchange(TaskBatch("train", rnd, payload, (task,)), timeout=None):
            if reply.error is not None or reply.payload is None:
                raise TransportError(f"fltrust: the server's training on its root data failed: {reply.error}")
            return {k: np.array(v) for k, v in decode_message(reply.payload).arrays.items()}
        raise TransportError("fltrust: the server's training on its root data returned no reply")
    return train
