"""Runtime: the server's round driver and the client's task execution."""

from typing import TYPE_CHECKING, Any

from fedra.runtime._checkpoint import Checkpoint, CheckpointStore, ClientRecord, StateStore
from fedra.runtime._client import ClientApp, RoundPayload, TaskResult, run_task, task_seed
from fedra.runtime._driver import DriverConfig, Evaluator, RoundDriver, RunResult, model_digest
from fedra.runtime._events import Observer, RoundRecord, RunInfo
from fedra.runtime._remote import Connector, PulledTaskLike, serve
from fedra.runtime._root import RootTrainer, root_dataset
from fedra.runtime._sandboxed import SandboxedRunner, TaskFailed, TaskRunner, serve_in_sandbox

if TYPE_CHECKING:
    from fedra.runtime._secure import SecureAggregation, SecureClient, SecureTransport
    from fedra.runtime._store import SQL_MAX_BLOB_BYTES, SqlStateStore

_LAZY = {"SQL_MAX_BLOB_BYTES", "SqlStateStore"}
_LAZY_SECURE = {"SecureAggregation", "SecureClient", "SecureTransport"}


def __getattr__(name: str) -> Any:
    # SQLAlchemy costs ~0.16 s to import: only a job that uses the database store pays for it.
    if name in _LAZY:
        from fedra.runtime import _store

        return getattr(_store, name)
    # secure aggregation loads cryptography (~7 MB of a small client's RSS): only when a job uses it
    if name in _LAZY_SECURE:
        from fedra.runtime import _secure

        return getattr(_secure, name)
    raise AttributeError(f"module 'fedra.runtime' has no attribute {name!r}")

__all__ = [
    "SQL_MAX_BLOB_BYTES",
    "Checkpoint",
    "CheckpointStore",
    "ClientApp",
    "ClientRecord",
    "Connector",
    "DriverConfig",
    "Evaluator",
    "Observer",
    "PulledTaskLike",
    "RootTrainer",
    "RoundDriver",
    "RoundPayload",
    "RoundRecord",
    "RunInfo",
    "RunResult",
    "SandboxedRunner",
    "SecureAggregation",
    "SecureClient",
    "SecureTransport",
    "SqlStateStore",
    "StateStore",
    "TaskFailed",
    "TaskResult",
    "TaskRunner",
    "model_digest",
    "root_dataset",
    "run_task",
    "serve",
    "serve_in_sandbox",
    "task_seed",
]
