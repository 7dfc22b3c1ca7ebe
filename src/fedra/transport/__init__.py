"""Transports: the contract and its implementations (in-memory here; processes in simulation)."""

from fedra.transport.base import JobFinished, Reply, Task, TaskBatch, TaskKind, Transport
from fedra.transport.inmemory import FunctionTransport

__all__ = ["FunctionTransport", "JobFinished", "Reply", "Task", "TaskBatch", "TaskKind", "Transport"]
