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
    aggregator = "mean"         # mean | median | trimmed_mean | krum | multi_krum
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
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedra.errors import JobSpecError

__all__ = [
    "ClientSection",
    "DataSection",
    "JobSection",
    "JobSpec",
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
    aggregator: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"] = "mean"
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


class JobSpec(_Section):
    job: JobSection
    data: DataSection = DataSection()
    strategy: StrategySection = StrategySection()
    client: ClientSection = ClientSection()
    simulation: SimulationSection = SimulationSection()
    sandbox: SandboxSection = SandboxSection()
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
        return self

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
