"""Transports: the contract and its implementations (in-memory here; processes in simulation)."""

from fedra.transport.base import Reply, Task, TaskBatch, TaskKind, Transport
from fedra.transport.inmemory import FunctionTransport

__all__ = ["FunctionTransport", "Reply", "Task", "TaskBatch", "TaskKind", "Transport"]
