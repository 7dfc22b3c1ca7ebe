"""The client side of a task: decode the round's payload, run the user's code, encode the reply.

The same :func:`run_task` serves simulation workers and networked clients. It knows nothing about the
model framework: a :class:`ClientApp` (see :mod:`fedra.app`) wraps the user's module and its framework.

Client-side differential privacy: when the task's config says ``dp_mode = "client"`` the client clips
its update (the delta from the round's global model) to ``dp_clip_norm`` before it leaves, so the server
never sees an unclipped update; with ``dp_mode = "local"`` it also adds Gaussian noise of standard
deviation ``dp_noise_multiplier * dp_clip_norm`` (:func:`fedra.privacy.local_dp_update`). The reply is
still a model, ``global + processed delta``, so the protocol and the server's validation are unchanged.
Local noise is drawn from fresh OS entropy, never from the task seed: the server chooses that seed, and
noise it can predict it can subtract. Non-floating arrays are sent back as the global model's values
(a counter such as BatchNorm's would reveal how many batches the client's data made).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedra.errors import ConfigError, UserCodeError
from fedra.privacy import clip_update, local_dp_update
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


def run_task(app: ClientApp, payload: RoundPayload, task: Task) -> memoryview:
    """Run one task on ``app`` and return the encoded reply. User errors propagate to the caller."""
    msg = payload.message
    round_seed = msg.config.get("round_seed", 0)
    seed = task_seed(int(round_seed) if isinstance(round_seed, int) else 0, task.client_id)
    app.set_arrays(msg.arrays)
    if payload.kind == "train":
        result = app.train(task.client_id, msg.config, seed)
        arrays = app.get_arrays()
        if msg.config.get("dp_mode") in ("client", "local"):
            arrays = _private_update(arrays, msg.arrays, msg.config)
    else:
        result = app.evaluate(task.client_id, msg.config, seed)
        arrays = {}
    meta: dict[str, Scalar] = {"task_id": task.task_id, "nonce": task.nonce, "client_id": task.client_id,
                               "num_examples": int(result.num_examples), "round": payload.round}
    return encode_message(Message(arrays=arrays, metrics=dict(result.metrics), meta=meta))


def _dp_number(config: Mapping[str, Scalar], key: str) -> float:
    value = config.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"task config {key}: expected a number with dp_mode {config.get('dp_mode')!r}, "
                          f"got {value!r}; the server sent an inconsistent task")
    return float(value)


def _private_update(trained: Mapping[str, np.ndarray], global_params: Mapping[str, np.ndarray],
                    config: Mapping[str, Scalar]) -> dict[str, np.ndarray]:
    """``global + delta``, the delta clipped (``"client"``) or clipped and noised (``"local"``)."""
    names = [name for name, g in global_params.items() if g.dtype.kind == "f"]
    delta = {name: np.subtract(trained[name], global_params[name], dtype=np.float64) for name in names}
    clip_norm = _dp_number(config, "dp_clip_norm")
    if config["dp_mode"] == "local":
        noise_multiplier = _dp_number(config, "dp_noise_multiplier")
        processed = local_dp_update(delta, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                                    rng=np.random.default_rng())
    else:
        processed, _ = clip_update(delta, clip_norm=clip_norm)
    return {name: (np.add(g, processed[name], dtype=np.float64).astype(g.dtype, copy=False)
                   if name in processed else np.array(g))
            for name, g in global_params.items()}
