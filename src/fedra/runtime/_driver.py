"""The round driver: the one loop every fedra job runs, in simulation and in deployment.

Each round it samples clients through the strategy, sends them one :class:`TaskBatch`, validates every
reply at the boundary (known task, right client, right nonce, once only, decodable, the model's exact
schema, finite values, within the size limit), folds accepted updates into the round's aggregate in task
order, asks the strategy for the next global model, evaluates, tells the observers and checkpoints.

Folding in task order, whatever order replies arrive in, is what makes a seeded simulation bit-identical
from run to run: a reply that arrives early waits (it is one of the "updates in flight") until every
earlier task has either been folded or is known to have failed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import final

import numpy as np

from fedra.errors import AggregationError, ConfigError, RecordError
from fedra.records import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    ArraySpec,
    Message,
    Scalar,
    decode_message,
    encode_message,
)
from fedra.runtime._checkpoint import ClientRecord, StateStore
from fedra.runtime._events import Observer, RoundRecord, RunInfo
from fedra.strategy import RoundAggregate, Strategy, StrategyState
from fedra.transport.base import Reply, Task, TaskBatch, TaskKind, Transport

__all__ = ["DriverConfig", "RoundDriver", "RunResult", "model_digest"]

log = logging.getLogger("fedra.driver")

Arrays = Mapping[str, np.ndarray]
#: Centralised evaluation: global model in, metrics out.
Evaluator = Callable[[Arrays], dict[str, float]]


def model_digest(params: Arrays) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in order: equal digests mean bit-identical models."""
    h = hashlib.sha256()
    for name, a in params.items():
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """How the driver runs rounds. ``client_config`` is sent with every training task."""

    rounds: int
    seed: int = 0
    min_replies: int = 1
    round_timeout: float | None = None
    evaluate_every: int = 1
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    client_config: Mapping[str, Scalar] | None = None
    #: seconds to wait for ``min_clients`` connected clients before a round (transports that can wait)
    client_wait: float = 0.0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds: expected at least 1, got {self.rounds}")
        if self.min_replies < 1:
            raise ConfigError(f"min_replies: expected at least 1, got {self.min_replies}")
        if self.round_timeout is not None and not self.round_timeout > 0:
            raise ConfigError(f"round_timeout: expected > 0 seconds, got {self.round_timeout}")
        if self.evaluate_every < 0:
            raise ConfigError(f"evaluate_every: expected >= 0 (0 = only after the last round), "
                              f"got {self.evaluate_every}")


@dataclass(frozen=True, slots=True)
class RunResult:
    params: dict[str, np.ndarray]
    state: StrategyState
    records: list[RoundRecord]

    @property
    def digest(self) -> str:
        return model_digest(self.params)


def _round_seed(seed: int, rnd: int) -> int:
    return int(np.random.SeedSequence([seed, rnd, 0x7A5C]).generate_state(1, np.uint32)[0])


def _verdict(reply: Reply, why: str | None) -> None:
    """Tell the transport (and through it the client) whether a reply was taken, and why not."""
    if reply.ack is not None:
        try:
            reply.ack(why)
        except Exception:
            log.exception("transport's ack callback failed; continuing")


@final
class _InOrder:
    """Folds replies into the aggregate in task order; replies that arrive early wait in ``ready``."""

    def __init__(self, aggregate: RoundAggregate, num_tasks: int) -> None:
        self.aggregate = aggregate
        self.ready: dict[int, tuple[Arrays, float]] = {}
        self.done = [False] * num_tasks
        self.next = 0

    def settle(self, index: int, item: tuple[Arrays, float] | None) -> None:
        """Task ``index`` is finished: with an update to fold, or ``None`` when it failed."""
        self.done[index] = True
        if item is not None:
            self.ready[index] = item
        while self.next < len(self.done) and self.done[self.next]:
            got = self.ready.pop(self.next, None)
            if got is not None:
                self.aggregate.add(*got)
            self.next += 1

    def drain(self) -> None:
        """The exchange is over: fold what arrived, in task order, skipping tasks that never answered."""
        for index in sorted(self.ready):
            self.aggregate.add(*self.ready.pop(index))


@final
class RoundDriver:
    """Runs a job's rounds over a transport. One instance runs one job."""

    def __init__(
        self,
        *,
        strategy: Strategy,
        transport: Transport,
        initial_params: Arrays,
        config: DriverConfig,
        evaluator: Evaluator | None = None,
        observers: Sequence[Observer] = (),
        checkpoints: StateStore | None = None,
    ) -> None:
        self.strategy = strategy
        self.transport = transport
        self.config = config
        self.evaluator = evaluator
        self.observers = list(observers)
        self.checkpoints = checkpoints
        self.spec = ArraySpec.of(initial_params)
        self.params: dict[str, np.ndarray] = {k: np.array(v) for k, v in initial_params.items()}
        self.state = strategy.init_state(self.params, seed=config.seed)
        self.records: list[RoundRecord] = []
        #: every client seen: first and last round, rounds it took part in (checkpointed with the model)
        self.registry: dict[str, ClientRecord] = {}
        if checkpoints is not None and (ckpt := checkpoints.load()) is not None:
            if ArraySpec.of(ckpt.params) != self.spec:
                raise ConfigError(
                    f"checkpoint in {checkpoints.directory} holds a different model: expected "
                    f"{self.spec}, found {ArraySpec.of(ckpt.params)}; use a new output directory"
                )
            self.params, self.state = ckpt.params, ckpt.state
            self.registry = {c.name: c for c in ckpt.clients}
            log.info("resuming after round %d from %s", ckpt.round, checkpoints.directory)

    # -- observers -------------------------------------------------------------------------------
    def _notify(self, method: str, arg: object) -> None:
        for obs in self.observers:
            try:
                getattr(obs, method)(arg)
            except Exception:
                log.exception("observer %r failed in %s; continuing", obs, method)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run the remaining rounds (all of them, unless resumed from a checkpoint)."""
        start = self.state.round
        self._notify("on_run_start", RunInfo(
            rounds=self.config.rounds, start_round=start, num_clients=len(self.transport.clients()),
            num_parameters=self.spec.num_parameters, model_bytes=self.spec.nbytes,
        ))
        for rnd in range(start + 1, self.config.rounds + 1):
            self.run_round(rnd)
        self._notify("on_run_end", self.records)
        return RunResult(params=self.params, state=self.state, records=self.records)

    def run_round(self, rnd: int) -> RoundRecord:
        t0 = time.perf_counter()
        rec = RoundRecord(round=rnd)
        available = self.transport.clients()
        need = self.strategy.sampler.min_clients
        if len(available) < need and self.config.client_wait > 0:
            available = self.transport.wait_for_clients(need, timeout=self.config.client_wait)
        try:
            selected, state = self.strategy.sample(self.state, available)
        except AggregationError as exc:
            log.warning("round %d: %s", rnd, exc)
            rec.fail("not enough clients to start the round")
            selected, state = [], self.state
        rec.sampled = len(selected)
        config = dict(self.config.client_config or {})
        config.update(round=rnd, round_seed=_round_seed(self.config.seed, rnd))
        aggregate, metrics = self._exchange("train", rnd, selected, config, rec)
        t1 = time.perf_counter()
        if rec.accepted >= self.config.min_replies:
            try:
                new_params, state = self.strategy.update(state, self.params, aggregate.finish())
            except AggregationError as exc:
                log.warning("round %d: aggregation failed: %s", rnd, exc)
                rec.fail(f"aggregation: {exc}")
                state = state.advanced(round=rnd)
            else:
                self.params = new_params
                rec.completed = True
                rec.train_metrics = metrics
        else:
            log.warning("round %d: %d accepted replies, %d required; the global model is unchanged",
                        rnd, rec.accepted, self.config.min_replies)
            state = state.advanced(round=rnd)
        self.state = state
        t2 = time.perf_counter()
        every = self.config.evaluate_every
        if self.evaluator is not None and (rnd == self.config.rounds or (every and rnd % every == 0)):
            rec.eval_metrics = self.evaluator(self.params)
        t3 = time.perf_counter()
        self._update_registry(rnd, selected, rec.participants)
        if self.checkpoints is not None:
            self.checkpoints.save(rnd, self.params, self.state, clients=self.registry.values())
        t4 = time.perf_counter()
        rec.seconds = {"train": t1 - t0, "aggregate": t2 - t1, "evaluate": t3 - t2, "checkpoint": t4 - t3,
                       "total": t4 - t0}
        self.records.append(rec)
        self._notify("on_round_end", rec)
        return rec

    def _update_registry(self, rnd: int, sampled: Sequence[str], took_part: Sequence[str]) -> None:
        done = set(took_part)
        for name in sampled:
            old = self.registry.get(name) or ClientRecord(name, first_seen=rnd, last_seen=rnd)
            if name in done:
                old = replace(old, last_seen=rnd, rounds_participated=old.rounds_participated + 1)
            self.registry[name] = old

    def _exchange(self, kind: TaskKind, rnd: int, selected: Sequence[str], config: Mapping[str, Scalar],
                  rec: RoundRecord) -> tuple[RoundAggregate, dict[str, float]]:
        payload = encode_message(Message(arrays=self.params, config=config,
                                         meta={"kind": kind, "round": rnd}))
        # From here the global model is a view into the payload the clients are sent: the server holds
        # one copy of the model during the round, not two.
        self.params = dict(decode_message(payload, spec=self.spec).arrays)
        tasks = tuple(Task(task_id=f"r{rnd}.{i}", client_id=cid, nonce=secrets.token_hex(8))
                      for i, cid in enumerate(selected))
        index = {t.task_id: i for i, t in enumerate(tasks)}
        order = _InOrder(self.strategy.start_round(self.params), len(tasks))
        sums: dict[str, float] = {}
        examples = 0
        for reply in self.transport.exchange(TaskBatch(kind, rnd, payload, tasks),
                                             timeout=self.config.round_timeout):
            i = index.get(reply.task_id)
            if i is None or tasks[i].client_id != reply.client_id:
                rec.fail("reply to a task not sent to that client")
                log.warning("round %d: client %r replied to task %r, which was not sent to it; rejected",
                            rnd, reply.client_id, reply.task_id)
                _verdict(reply, f"task {reply.task_id} was not sent to {reply.client_id}")
                continue
            if order.done[i]:
                rec.fail("duplicate reply")
                log.warning("round %d: duplicate reply from %r for task %r; rejected",
                            rnd, reply.client_id, reply.task_id)
                _verdict(reply, f"duplicate reply to task {reply.task_id}")
                continue
            rec.replies += 1
            item, why = self._accept(reply.payload, reply.error, tasks[i], rnd, rec)
            _verdict(reply, why)
            order.settle(i, None if item is None else (item[0], item[1]))
            if item is not None:
                rec.participants.append(reply.client_id)
            if item is not None:
                msg_metrics, n = item[2], int(item[1])
                examples += n
                for k, v in msg_metrics.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        sums[k] = sums.get(k, 0.0) + float(v) * n
        order.drain()
        rec.accepted = order.aggregate.count
        rec.num_examples = examples
        return order.aggregate, ({k: v / examples for k, v in sums.items()} if examples else {})

    def _accept(self, payload: object, error: str | None, task: Task, rnd: int, rec: RoundRecord
                ) -> tuple[tuple[Arrays, float, Mapping[str, Scalar]] | None, str | None]:
        """Validate one reply: ``((arrays, weight, metrics), None)``, or ``(None, why)`` (also recorded)."""
        who = f"round {rnd}: client {task.client_id!r}"
        if error is not None or payload is None:
            reason = error or "empty reply"
            rec.fail(f"client error: {reason.splitlines()[0][:200]}")
            log.warning("%s failed: %s", who, reason)
            return None, f"client error: {reason[:1000]}"
        try:
            msg = decode_message(payload, spec=self.spec, require_finite=True,  # type: ignore[arg-type]
                                 max_bytes=self.config.max_payload_bytes, what=f"update from {task.client_id!r}")
        except RecordError as exc:
            rec.fail(type(exc).__name__)
            log.warning("%s: update rejected: %s", who, exc)
            return None, f"{type(exc).__name__}: {exc}"
        if msg.meta.get("task_id") != task.task_id or msg.meta.get("nonce") != task.nonce:
            rec.fail("task id or nonce mismatch")
            log.warning("%s: reply does not carry task %r's id and nonce; rejected", who, task.task_id)
            return None, f"expected the reply to carry task {task.task_id}'s id and nonce; it does not"
        n = msg.meta.get("num_examples")
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            rec.fail("invalid num_examples")
            log.warning("%s: expected num_examples to be a positive integer, got %r; rejected", who, n)
            return None, f"expected num_examples to be a positive integer, got {n!r}"
        return (msg.arrays, float(n), msg.metrics), None
