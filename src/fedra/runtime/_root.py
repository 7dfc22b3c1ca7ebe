"""FLTrust's server side outside the simulation: the root dataset and the root trainer (Cao et al., NDSS 2021).

FLTrust scores each client's update by its cosine to the server's own update, trained each round on a
small clean *root dataset*. The round driver asks a :data:`~fedra.runtime.RootTrainer` for it; the
simulation trains in a worker, and ``fedra server`` with the two pieces here, in its own process:

- :func:`root_dataset` draws ``strategy.root_size`` examples uniformly without replacement, seeded by
  ``job.seed``, from a list of datasets taken as one. ``fedra server`` passes the job's dataset's training
  split (the union of the clients' partitions, what ``fedra simulate`` draws from), or the server's own
  data (``--root-data FILE.npz``). Fewer examples than ``root_size`` is an error, not a smaller root set.
- :class:`RootTrainer` runs the user's ``train`` on the root data through :func:`run_task`, exactly as a
  client runs a task, as the pseudo-client :data:`ROOT_CLIENT` with the round's root seed. With the
  same draw and seeds as the simulation, a networked FLTrust run is bit-identical to ``fedra simulate``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import final

import numpy as np

from fedra.data import Dataset
from fedra.errors import AggregationError, ConfigError, DatasetError, FedraError, UserCodeError
from fedra.records import Message, Scalar, decode_message
from fedra.runtime._client import ClientApp, RoundPayload, run_task
from fedra.transport.base import Task

__all__ = ["ROOT_CLIENT", "RootTrainer", "root_dataset", "root_seed"]

#: the pseudo-client id of the server's training (the same as the simulation's, so the task seeds agree)
ROOT_CLIENT = "__root__"

_ROOT_STREAM = 0xF17  # FLTrust's own stream of the job seed: the root draw and the root training seeds


def root_dataset(parts: Sequence[Dataset], size: int, seed: int, *, source: str) -> Dataset:
    """``size`` examples drawn uniformly without replacement (seeded by ``seed``) from ``parts`` taken as one.

    ``source`` says in errors where the examples came from. Raises :class:`ConfigError` when ``parts``
    hold fewer than ``size`` examples or none at all, and when they disagree on features or classes.
    """
    if size < 1:
        raise ConfigError(f"strategy.root_size: expected at least 1 root example, got {size}")
    sizes = np.array([len(p.y) for p in parts], dtype=np.int64)
    total = int(sizes.sum())
    if total < size:
        raise ConfigError(f"fltrust: strategy.root_size = {size}, but the server's root data ({source}) has "
                          f"{total} examples; lower strategy.root_size to at most {total} or give "
                          f"`fedra server --root-data FILE.npz` with at least {size} examples")
    shapes = {p.x.shape[1:] for p in parts if len(p.y)}
    classes = {p.num_classes for p in parts}
    if len(shapes) > 1 or len(classes) > 1:
        raise DatasetError(f"fltrust: the server's root data ({source}) mixes feature shapes "
                           f"{sorted(shapes)} or class counts {sorted(classes)}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _ROOT_STREAM])))
    picks = np.sort(rng.choice(total, size=size, replace=False))
    ends = np.cumsum(sizes)
    owner = np.searchsorted(ends, picks, side="right")
    offset = picks - (ends - sizes)[owner]
    x = np.stack([parts[o].x[i] for o, i in zip(owner, offset, strict=True)])
    y = np.array([parts[o].y[i] for o, i in zip(owner, offset, strict=True)], dtype=np.int64)
    name = parts[0].name.split("/")[0] if parts else "root"
    return Dataset(x, y, parts[0].num_classes, f"{name}/root")


def root_seed(seed: int, rnd: int) -> int:
    """The round seed of the server's training in round ``rnd`` (the task seed follows from it and
    :data:`ROOT_CLIENT`, as for any client)."""
    return int(np.random.SeedSequence([seed, rnd, _ROOT_STREAM]).generate_state(1, np.uint32)[0])


@final
class RootTrainer:
    """FLTrust's server training, in this process: ``(global model, round) -> model trained on the root data``.

    ``app`` is the user's module bound to the root dataset (its ``train`` is called with client id
    :data:`ROOT_CLIENT`); ``client_config`` is the job's ``[client]`` table, as the clients get it.
    """

    def __init__(self, app: ClientApp, *, seed: int, client_config: Mapping[str, Scalar]) -> None:
        self.app = app
        self.seed = seed
        self.client_config = dict(client_config)

    def __call__(self, params: Mapping[str, np.ndarray], rnd: int) -> dict[str, np.ndarray]:
        config: dict[str, Scalar] = {**self.client_config, "round": rnd, "round_seed": root_seed(self.seed, rnd)}
        payload = RoundPayload(kind="train", round=rnd,
                               message=Message(arrays=params, config=config, meta={"kind": "train", "round": rnd}))
        task = Task(task_id=f"r{rnd}.root", client_id=ROOT_CLIENT, nonce=secrets.token_hex(8))
        try:
            reply = run_task(self.app, payload, task)
        except UserCodeError as exc:
            raise UserCodeError(f"fltrust: the server's training on its root data failed: {exc}") from exc
        try:
            trained = decode_message(reply, require_finite=True, what="the server's root model").arrays
        except FedraError as exc:
            # a non-finite root model fails this round's aggregation; the global model stays as it was
            raise AggregationError(f"fltrust: the server's training on its root data: {exc}") from exc
        return {name: np.array(a) for name, a in trained.items()}
