"""The job spec: one TOML file that describes a federated job, validated before anything runs.

The same file drives ``fedra simulate`` now, and the server, the Kubernetes rendering and the systemd
units later. Every table and field is checked by pydantic with unknown fields forbidden; a bad spec raises
:class:`fedra.errors.JobSpecError` naming each bad field, the value found and what is allowed.

Example::

    [job]
    name = "digits"
    module = "task.py"          # the user's module: a path relative to this file, or a module name
    rounds = 20
    seed = 0

    [data]
    dataset = "digits"          # digits | fashion_mnist | synthetic
    partition = "dirichlet"     # iid | dirichlet | shards | natural
    alpha = 0.5
    num_clients = 10

    [strategy]
    fraction = 1.0
    aggregator = "mean"         # mean | median | trimmed_mean | krum | multi_krum | bulyan
                                # | centered_clip | norm_bound | fltrust (see [strategy] fields)
    optimizer = "fedavg"        # fedavg | fedavgm | fedadam | fedyogi | fedadagrad

    [client]                    # sent to train() as its config; any extra keys are passed through
    epochs = 1
    batch_size = 32
    lr = 0.1

    [sandbox]                   # how `fedra client` runs training (overridable on its command line)
    enabled = "auto"            # auto (sandbox where the host allows it, else warn) | on | off
    memory_mib = 2048           # memory limit; a task above it fails with "out of memory (limit N MiB)"
    cpu = 1.0                   # CPU time, in CPUs (like docker --cpus)
    pids = 256                  # processes and threads
    task_timeout = 600          # seconds per task; a longer one is killed: "task timed out after N s"

    [privacy]                   # client-level DP-FedAvg (McMahan et al. 2018); absent: off
    mode = "server"             # server (server clips) | client (clients clip) | local (clients clip + noise)
    clip_norm = 1.0             # C: each client's update (delta from the global model) is clipped to it
    noise_multiplier = 1.0      # z (noise stddev z*C on the sum), or target_epsilon = ... (calibrates z)
    delta = 1e-5
    max_epsilon = 8.0           # stop before a round that would spend more (optional)
    sampling = "poisson"        # poisson (each client w.p. strategy.fraction) | fixed (a fixed cohort)
    accountant = "rdp"          # rdp | pld
    noise_seed = "random"       # random (secret) | job (reproducible from job.seed: tests only)
    [privacy.adaptive]          # optional: adapt C to a quantile of update norms (Andrew et al. 2021)
    target_quantile = 0.5
    learning_rate = 0.2

    [quarantine]                # anomaly detection: score every update, quarantine repeat offenders
    z_threshold = 3.5           # flagged when a robust z-score of norm/peer distance (or -cosine) is above
    threshold = 2.0             # suspicion (decayed count of flagged rounds) that quarantines a client
    quarantine_rounds = 10      # first quarantine's length; repeats last backoff times longer

    [attack]                    # fedra simulate only: simulated malicious clients
    kind = "sign_flip"          # sign_flip | gaussian_noise | scale | label_flip | alie | ipm | min_max | min_sum
    fraction = 0.2              # share of the clients that attack, chosen from job.seed
    collude = true              # attackers see the round's honest updates (alie, ipm, min_max, min_sum)
    params = { }                # the kind's parameters, e.g. { sigma = 1.0 } for gaussian_noise

    [secagg]                    # secure aggregation (SecAgg+): the server learns only the sum
    clip = 1.0                  # per-coordinate bound of each delta (default 1.0; 2 x clip_norm with DP)
    ring_bits = 32              # 32 | 64
    stage_timeout = 60.0        # seconds each key, share and unmask step waits for replies
    max_weight = 1000           # examples one client's update can weigh at most (FedAvg weighting)

Combinations the mathematics does not allow are refused with the fields named: a robust aggregator with
[privacy] (its sensitivity is not DP-FedAvg's), [quarantine] with [privacy]; under secure aggregation
([secagg]) the server sees only the sum, so neither per-update scores ([quarantine]) nor any aggregator
but the mean can run, nor a model-poisoning [attack] (the simulator applies it where the server would see
each update); [privacy] with [secagg] must be mode "client" without adaptive clipping (the clients clip and
add the noise in shares: the server has nothing in the clear to clip or to noise).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedra.attacks import AttackConfig
from fedra.errors import ConfigError, JobSpecError
from fedra.privacy import DPConfig
from fedra.strategy import QuarantinePolicy

__all__ = [
    "AttackSection",
    "ClientSection",
    "DataSection",
    "DeploySection",
    "JobSection",
    "JobSpec",
    "PrivacyAdaptiveSection",
    "PrivacySection",
    "QuarantineSection",
    "SandboxSection",
    "SimulationSection",
    "StrategySection",
    "load_job",
    "parse_job",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class JobSection(_Section):
    name: str = Field("fedra-job", min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    module: str = Field(min_length=1, description="the user's module: a .py path or an importable name")
    framework: Literal["auto", "torch", "numpy"] = "auto"
    rounds: int = Field(ge=1, le=1_000_000)
    seed: int = Field(0, ge=0, lt=2**63)
    output_dir: str = "runs"


class DataSection(_Section):
    dataset: Literal["digits", "fashion_mnist", "synthetic"] = "digits"
    partition: Literal["iid", "dirichlet", "shards", "natural"] = "iid"
    num_clients: int = Field(10, ge=1, le=1_000_000)
    alpha: float | None = Field(None, gt=0)
    shards_per_client: int = Field(2, ge=1)
    path: str | None = None
    test_fraction: float | None = Field(None, gt=0, lt=1, description="default: 0.2 (digits), 0.1 per user (synthetic)")
    synthetic_alpha: float = Field(1.0, ge=0)
    synthetic_beta: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        if self.partition == "dirichlet" and self.alpha is None:
            raise ValueError("partition 'dirichlet' needs alpha (a positive float, e.g. 0.5)")
        if self.partition == "natural" and self.dataset != "synthetic":
            raise ValueError(f"partition 'natural' needs a dataset with users (synthetic); "
                             f"{self.dataset!r} has none: use iid, dirichlet or shards")
        if self.path is not None and self.dataset != "fashion_mnist":
            raise ValueError(f"path: dataset {self.dataset!r} reads no files; remove data.path")
        if self.dataset == "synthetic" and self.partition != "natural":
            raise ValueError("dataset 'synthetic' is split by user: set partition = \"natural\"")
        return self


class StrategySection(_Section):
    fraction: float = Field(1.0, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    min_replies: int = Field(1, ge=1)
    aggregator: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "centered_clip",
                        "norm_bound", "fltrust"] = "mean"
    trim_fraction: float = Field(0.1, ge=0, lt=0.5)
    num_byzantine: int = Field(0, ge=0)
    num_selected: int | None = Field(None, ge=1)
    optimizer: Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    round_timeout: float | None = Field(None, gt=0)
    evaluate_every: int = Field(1, ge=0)
    max_norm: float = Field(1.0, gt=0, allow_inf_nan=False, description="norm_bound: largest delta norm")
    clip_tau: float = Field(1.0, gt=0, allow_inf_nan=False, description="centered_clip: clipping radius")
    clip_iterations: int = Field(1, ge=1, description="centered_clip: clipping steps per round")
    root_size: int = Field(100, ge=1, description="fltrust: examples in the server's root dataset "
                                                  "(simulation: drawn from the clients' training data)")


class ClientSection(BaseModel):
    """Sent to the user's ``train`` as ``config``. Known keys are checked; extra scalar keys pass through."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_default=True)

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    proximal_mu: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _extras_are_scalars(self) -> ClientSection:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, bool | int | float | str):
                raise ValueError(f"extra client config {key!r}: expected bool, int, float or str, "
                                 f"got {type(value).__name__}")
        return self

    def as_config(self) -> dict[str, bool | int | float | str]:
        return {**self.model_dump()}


class SimulationSection(_Section):
    workers: int = Field(0, ge=0, le=256, description="worker processes; 0 = one per CPU core")
    max_cached_partitions: int = Field(1024, ge=1, description="prepared partitions each worker keeps")


class SandboxSection(_Section):
    """How ``fedra client`` runs the user's training: in a sandbox, with these limits (``None``: unlimited)."""

    enabled: Literal["auto", "on", "off"] = "auto"
    memory_mib: int | None = Field(None, ge=32, description="memory limit of the training worker, MiB")
    cpu: float | None = Field(None, gt=0, description="CPU time in CPUs, like docker --cpus")
    pids: int | None = Field(512, ge=8, description="processes and threads of the training worker")
    work_dir: str | None = Field(None, description="the worker's only writable directory (default: a "
                                                   "fresh temporary one)")
    task_timeout: float | None = Field(None, gt=0, description="seconds one task may run in the sandbox "
                                                              "before its worker is killed (default: no limit)")


class DeploySection(_Section):
    """How ``fedra deploy`` runs the server and the clients as services: who, and within which limits.

    The client's limits default to the sandbox's plus a margin for the client process itself (its gRPC
    connection and the copy of the model it holds), so one spec bounds training and service alike.
    """

    user: str = Field("fedra", min_length=1, max_length=31, pattern=r"^[a-z_][a-z0-9_-]*$",
                      description="the dedicated system user the services run as")
    server_memory_mib: int = Field(2048, ge=64, description="memory limit of the server service, MiB")
    server_cpu: float = Field(2.0, gt=0, description="CPU limit of the server service, in CPUs")
    client_memory_mib: int | None = Field(None, ge=64, description="memory limit of a client service, "
                                                                   "MiB (default: sandbox.memory_mib + 512, "
                                                                   "or 2048)")
    client_cpu: float | None = Field(None, gt=0, description="CPU limit of a client service, in CPUs "
                                                             "(default: sandbox.cpu + 0.5, or 2.0)")


class PrivacyAdaptiveSection(_Section):
    """Adaptive clipping to a quantile of the update norms (Andrew et al. 2021)."""

    target_quantile: float = Field(0.5, gt=0, lt=1, description="fraction of updates meant to fit under C")
    learning_rate: float = Field(0.2, gt=0, allow_inf_nan=False)
    count_stddev: float | None = Field(None, gt=0, allow_inf_nan=False,
                                       description="noise on the unclipped count; default expected/20")


class PrivacySection(_Section):
    """Client-level differential privacy (DP-FedAvg); see :class:`fedra.privacy.DPConfig` for the meaning.

    ``noise_seed`` is the job's, not the mechanism's: ``"random"`` draws the server's noise from secret
    OS entropy (kept in the checkpoint); ``"job"`` derives it from ``job.seed`` so a run can be
    reproduced bit for bit, and whoever knows the spec can then subtract the noise: tests only.
    """

    mode: Literal["server", "client", "local"] = "server"
    clip_norm: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(gt=0, lt=1)
    noise_multiplier: float | None = Field(None, ge=0, allow_inf_nan=False)
    target_epsilon: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_epsilon: float | None = Field(None, gt=0, allow_inf_nan=False)
    adaptive: PrivacyAdaptiveSection | None = None
    accountant: Literal["rdp", "pld"] = "rdp"
    sampling: Literal["poisson", "fixed"] = "poisson"
    noise_seed: Literal["random", "job"] = "random"

    @model_validator(mode="after")
    def _consistent(self) -> PrivacySection:
        self.dp_config()  # the cross-field rules live in DPConfig, stated once
        return self

    def dp_config(self) -> DPConfig:
        """The :class:`~fedra.privacy.DPConfig` this section describes."""
        table = self.model_dump(exclude={"noise_seed"}, exclude_none=True)
        try:
            return DPConfig.from_mapping(table)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class QuarantineSection(_Section):
    """Anomaly detection and quarantine (:class:`fedra.strategy.QuarantinePolicy`); absent: off."""

    z_threshold: float = Field(3.5, gt=0, allow_inf_nan=False)
    relative_floor: float = Field(0.05, ge=0, allow_inf_nan=False)
    cosine_floor: float = Field(0.05, ge=0, allow_inf_nan=False)
    decay: float = Field(0.8, ge=0, lt=1)
    threshold: float = Field(2.0, gt=0, allow_inf_nan=False)
    quarantine_rounds: int = Field(10, ge=1)
    backoff: float = Field(2.0, ge=1, allow_inf_nan=False)
    min_updates: int = Field(5, ge=1)

    def policy(self) -> QuarantinePolicy:
        """The :class:`~fedra.strategy.QuarantinePolicy` this section describes."""
        return QuarantinePolicy(**self.model_dump())


class AttackSection(_Section):
    """Simulated attackers (``fedra simulate`` only): see :class:`fedra.attacks.AttackConfig`."""

    kind: str = Field(min_length=1, description="one of fedra.attacks.ATTACKS")
    fraction: float = Field(ge=0, lt=1, description="share of the clients that are malicious")
    params: dict[str, float | int | str] = Field(default_factory=dict)
    collude: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> AttackSection:
        self.config()  # the rules live in AttackConfig, stated once
        return self

    def config(self) -> AttackConfig:
        """The :class:`~fedra.attacks.AttackConfig` this section describes."""
        try:
            return AttackConfig(kind=self.kind, fraction=self.fraction, params=dict(self.params),
                                collude=self.collude)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class SecAggSection(_Section):
    """Secure aggregation (SecAgg+, :mod:`fedra.secagg`); absent: off. The server learns only the sum.

    ``clip`` bounds each coordinate of a client's update (its delta from the global model) before it is
    quantized into the ring: default 1.0, or twice ``privacy.clip_norm`` under [privacy] (the L2 clip
    already bounds every coordinate by ``clip_norm``; the other half of the range is headroom for the
    noise). Clients report the share of coordinates they clipped as the metric ``secagg_clipped``.
    ``degree`` and ``threshold`` default to :func:`fedra.secagg.default_parameters` of each round's cohort.
    Updates are weighted by examples up to ``max_weight`` (each counts once under [privacy]).
    """

    clip: float | None = Field(None, gt=0, allow_inf_nan=False)
    degree: int | None = Field(None, ge=2)
    threshold: int | None = Field(None, ge=2)
    ring_bits: Literal[32, 64] = 32
    stage_timeout: float = Field(60.0, gt=0, allow_inf_nan=False,
                                 description="seconds each key, share and unmask step waits for replies")
    max_weight: int = Field(1000, ge=1, description="examples one client's update can weigh at most")


class JobSpec(_Section):
    job: JobSection
    data: DataSection = DataSection()
    strategy: StrategySection = StrategySection()
    client: ClientSection = ClientSection()
    simulation: SimulationSection = SimulationSection()
    sandbox: SandboxSection = SandboxSection()
    deploy: DeploySection = DeploySection()
    privacy: PrivacySection | None = None
    quarantine: QuarantineSection | None = None
    attack: AttackSection | None = None
    secagg: SecAggSection | None = None
    #: where the spec was read from; relative paths in it are relative to this directory
    base_dir: str = Field(".", exclude=True)

    @field_validator("base_dir")
    @classmethod
    def _abs(cls, v: str) -> str:
        return str(Path(v).resolve())

    @model_validator(mode="after")
    def _cross(self) -> JobSpec:
        s, d = self.strategy, self.data
        if s.min_clients > d.num_clients:
            raise ValueError(f"strategy.min_clients = {s.min_clients} exceeds data.num_clients = "
                             f"{d.num_clients}; lower min_clients or add clients")
        if s.aggregator in ("krum", "multi_krum") and d.num_clients <= 2 * s.num_byzantine + 2:
            raise ValueError(f"strategy.aggregator = {s.aggregator!r} needs more than 2*num_byzantine+2 = "
                             f"{2 * s.num_byzantine + 2} clients per round, data.num_clients = {d.num_clients}")
        if s.aggregator == "bulyan" and d.num_clients < 4 * s.num_byzantine + 3:
            raise ValueError(f"strategy.aggregator = 'bulyan' needs at least 4*num_byzantine+3 = "
                             f"{4 * s.num_byzantine + 3} clients per round, data.num_clients = {d.num_clients}; "
                             "lower strategy.num_byzantine or add clients")
        if self.quarantine is not None and self.privacy is not None:
            raise ValueError(
                "quarantine with privacy: expected one of them. Quarantine scores each client's update in "
                "the clear and decides who is sampled next from it, which leaks individual updates that the "
                "DP accountant does not count; remove [quarantine] or [privacy]")
        if self.privacy is not None and s.aggregator != "mean":
            raise ValueError(
                f"privacy with strategy.aggregator = {s.aggregator!r}: expected aggregator = 'mean'. DP-FedAvg "
                "calibrates its noise to the sum of clipped updates, which one client moves by at most "
                "clip_norm; a median, trimmed mean or Krum has another (data-dependent) sensitivity, e.g. "
                "Krum passes one client's update through whole, so that noise would not make it private")
        if self.secagg is not None:
            self._check_secagg(self.secagg)
        return self

    def _check_secagg(self, sa: SecAggSection) -> None:
        s, p = self.strategy, self.privacy
        if s.aggregator != "mean":
            raise ValueError(
                f"secagg with strategy.aggregator = {s.aggregator!r}: expected aggregator = 'mean'. Under secure "
                "aggregation the server learns only the sum of the updates, so a median, trimmed mean, Krum, "
                "Bulyan, centered clipping, norm bounding or FLTrust (which all look at each update) cannot "
                "run; remove [secagg] or use the mean")
        if self.quarantine is not None:
            raise ValueError(
                "quarantine with secagg: expected one of them. Quarantine scores each client's update, which "
                "secure aggregation hides from the server; remove [quarantine] or [secagg]")
        if self.attack is not None and self.attack.config().target == "model":
            raise ValueError(
                f"attack.kind = {self.attack.kind!r} with secagg: the simulator applies model-poisoning "
                "attacks to the updates the server receives, which secure aggregation hides; use a data "
                "attack (e.g. label_flip) or remove [secagg]")
        if s.min_clients < 3 or s.min_replies < 2:
            raise ValueError(
                f"secagg with strategy.min_clients = {s.min_clients} and min_replies = {s.min_replies}: "
                "expected min_clients >= 3 and min_replies >= 2. A sum of one update is that update, and "
                "with two clients each learns the other's from the sum; raise them")
        if p is not None:
            if p.mode != "client" or p.adaptive is not None:
                raise ValueError(
                    f"privacy.mode = {p.mode!r}{' with [privacy.adaptive]' if p.adaptive else ''} with secagg: "
                    "expected mode = 'client' without adaptive clipping. Under secure aggregation the clients "
                    "clip their updates and each adds a share of the noise (distributed DP); the server sees "
                    "nothing in the clear to clip, noise or count")
            if sa.clip is not None and sa.clip < p.clip_norm:
                raise ValueError(
                    f"secagg.clip = {sa.clip:g} is below privacy.clip_norm = {p.clip_norm:g}: expected at least "
                    "clip_norm (better twice it, the default) so the ring never clips a clipped update")
        if sa.degree is not None or sa.threshold is not None:
            from fedra.secagg import SecAggError, check_parameters, default_parameters

            n = s.min_clients
            degree = sa.degree if sa.degree is not None else default_parameters(n)[0]
            threshold = sa.threshold if sa.threshold is not None else (degree + 1) // 2 + 1
            try:
                check_parameters(num_clients=max(n, degree + 1), degree=degree, threshold=threshold)
            except SecAggError as exc:
                raise ValueError(f"secagg: {exc}") from None

    def secagg_clip(self) -> float | None:
        """The ring's per-coordinate bound: ``secagg.clip``, or its default (None without [secagg])."""
        if self.secagg is None:
            return None
        if self.secagg.clip is not None:
            return self.secagg.clip
        return 2.0 * self.privacy.clip_norm if self.privacy is not None else 1.0

    def module_path(self) -> str:
        """The user's module as a file path when it names a file, else as given (a module name)."""
        m = self.job.module
        if m.endswith(".py") or os.sep in m:
            return str((Path(self.base_dir) / m).resolve())
        return m

    def output_path(self) -> Path:
        return (Path(self.base_dir) / self.job.output_dir).resolve()

    def resolved(self) -> dict[str, Any]:
        """The full spec with defaults filled in (what gets written to the run directory)."""
        return self.model_dump(mode="json", exclude_none=True)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_job(data: dict[str, Any], *, source: str = "<job>", base_dir: str | os.PathLike[str] = ".") -> JobSpec:
    """Validate a job spec given as a dict (e.g. parsed TOML)."""
    try:
        return JobSpec.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _loc(err["loc"])
            value = err.get("input")
            shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field; check its spelling against the documented fields"
            problems.append((where, f"{msg}{shown}"))
        raise JobSpecError(source, problems) from None


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job spec TOML file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise JobSpecError(str(p), [("(file)", "not found; pass the path of a job TOML file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(str(p), [("(syntax)", f"not valid TOML: {exc}")]) from None
    return parse_job(raw, source=str(p), base_dir=p.parent)
