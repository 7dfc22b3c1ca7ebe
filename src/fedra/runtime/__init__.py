"""Runtime: the server's round driver and the client's task execution."""

from fedra.runtime._checkpoint import Checkpoint, CheckpointStore
from fedra.runtime._client import ClientApp, RoundPayload, TaskResult, run_task, task_seed
from fedra.runtime._driver import DriverConfig, Evaluator, RoundDriver, RunResult, model_digest
from fedra.runtime._events import Observer, RoundRecord, RunInfo

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "ClientApp",
    "DriverConfig",
    "Evaluator",
    "Observer",
    "RoundDriver",
    "RoundPayload",
    "RoundRecord",
    "RunInfo",
    "RunResult",
    "TaskResult",
    "model_digest",
    "run_task",
    "task_seed",
]
