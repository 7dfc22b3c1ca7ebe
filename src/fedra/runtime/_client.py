"""The client side of a task: decode the round's payload, run the user's code, encode the reply.

The same :func:`run_task` serves simulation workers and networked clients. It knows nothing about the
model framework: a :class:`ClientApp` (see :mod:`fedra.app`) wraps the user's module and its framework.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedra.errors import UserCodeError
from fedra.records import DEFAULT_MAX_PAYLOAD_BYTES, Message, Scalar, decode_message, encode_message
from fedra.transport.base import Buffer, Task

__all__ = ["ClientApp", "RoundPayload", "TaskResult", "run_task", "task_seed"]


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What the user's ``train`` or ``evaluate`` produced."""

    num_examples: int
    metrics: Mapping[str, Scalar]


class ClientApp(Protocol):
    """A client's model and data, behind the framework adapter."""

    def get_arrays(self) -> dict[str, np.ndarray]: ...

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None: ...

    def train(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> TaskResult: ...

    def evaluate(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> TaskResult: ...


def task_seed(round_seed: int, client_id: str) -> int:
    """The seed of one client's task: a function of the round's seed and the client, nothing else."""
    digest = hashlib.blake2b(f"{round_seed}/{client_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True, slots=True)
class RoundPayload:
    """A round's decoded payload, decoded once and shared by every task of that round."""

    kind: str
    round: int
    message: Message

    @classmethod
    def decode(cls, payload: Buffer, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> RoundPayload:
        msg = decode_message(payload, require_finite=True, what="task", max_bytes=max_bytes)
        kind, rnd = msg.meta.get("kind"), msg.meta.get("round")
        if kind not in ("train", "evaluate") or not isinstance(rnd, int):
            raise UserCodeError(f"task payload: expected meta kind train|evaluate and an integer round, "
                                f"got kind={kind!r} round={rnd!r}")
        return cls(kind=str(kind), round=rnd, message=msg)


def run_task(app: ClientApp, payload: RoundPayload, task: Task) -> bytearray:
    """Run one task on ``app`` and return the encoded reply. User errors propagate to the caller."""
    msg = payload.message
    round_seed = msg.config.get("round_seed", 0)
    seed = task_seed(int(round_seed) if isinstance(round_seed, int) else 0, task.client_id)
    app.set_arrays(msg.arrays)
    if payload.kind == "train":
        result = app.train(task.client_id, msg.config, seed)
        arrays = app.get_arrays()
    else:
        result = app.evaluate(task.client_id, msg.config, seed)
        arrays = {}
    meta: dict[str, Scalar] = {"task_id": task.task_id, "nonce": task.nonce, "client_id": task.client_id,
                               "num_examples": int(result.num_examples), "round": payload.round}
    return encode_message(Message(arrays=arrays, metrics=dict(result.metrics), meta=meta))
