"""Secure aggregation in a round: the server's side, run by the round driver, and the client's side.

A round under secure aggregation (SecAgg+, :mod:`fedra.secagg`) is four exchanges over the same
transport contract as any round, so it runs over gRPC and in the simulation alike:

======================  =====================================  ======================================
exchange (task kind)    the server sends                       the client replies
======================  =====================================  ======================================
``train``               the global model, the round's           trains, keeps its update, and sends
                        :class:`~fedra.secagg.SecAggConfig`     its two public keys (``AdvertiseKeys``)
``secagg`` stage 1      each client its neighbours' keys        encrypted Shamir shares (``ShareKeys``)
``secagg`` stage 2      each client the shares addressed to it  its masked update (``MaskedInput``)
``secagg`` stage 3      who survived, who dropped               the shares that unmask the sum
======================  =====================================  ======================================

The train exchange's deadline is the round's; each ``secagg`` exchange has ``stage_timeout``. Whoever
does not answer a stage has dropped out of the round, as the protocol allows up to its threshold.
The ``secagg`` tasks each carry their own payload (:attr:`fedra.transport.base.Task.payload`): a
records message whose one ``uint8`` array holds the protocol message's bytes
(:func:`fedra.secagg.encode_message`). The driver checks every reply as in any round (task sent to that
client, once only, its nonce, the size limit) before the server's state machine sees the message, and the
state machine checks round, stage, sender and sequence.

**What a client sends.** Its update is the delta from the round's global model over the floating-point
arrays, flattened in the model's order (non-floating arrays keep the global value, as under DP). As in
FedAvg it is weighted by the client's examples, bounded as Flower's SecAgg+ bounds them: with
``r = min(num_examples, max_weight) / max_weight`` the client sends ``r * delta`` followed by ``r``
itself (times the ring's bound ``clip``, so it is never clipped), so the sum yields both the weighted sum and the total weight, and the server adds
``sum(r * delta) / sum(r)`` to the global model (one client can weigh at most ``max_weight`` examples'
worth, and no weight is seen alone). Under DP every client counts once (no weight coordinate): the
sensitivity analysis bounds each client's contribution by the clip norm, which a weight would undo. A
client's training metrics and example count travel in the clear with its keys (they describe the
training, not the update); ``secagg_clipped`` is the share of its coordinates the ring's bound clipped.

**Distributed DP** (``[privacy] mode = "client"`` with ``[secagg]``). The server never holds the sum
without noise, so the clients add it: each clips its delta to L2 norm ``C`` and adds, after quantizing
into the ring, Gaussian noise of standard deviation ``z C / sqrt(m)``, with ``m = min_replies`` (the
fewest survivors whose sum the server may unmask). ``s`` surviving shares sum to noise of standard
deviation ``z C sqrt(s / m)``; the sum is divided by the fixed denominator of DP-FedAvg. The accountant
is charged, for each released round, the effective multiplier ``z sqrt(s / m) / r`` with ``r`` the
growth of the sensitivity by rounding to whole levels (:func:`fedra.secagg.rounding_sensitivity`), so
fewer survivors are accounted as the smaller noise they are. A round whose masked inputs number fewer
than ``m`` is abandoned before anything is unmasked (and charged at the nominal multiplier, like any
round that released nothing). Treating the sum of the rounded Gaussian shares as Gaussian is the usual
approximation of distributed DP (Kairouz, Liu and Steinke 2021 bound its error for discrete Gaussians);
with noise of thousands of levels per share, as here, it is far below the accountant's own slack.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, final

import numpy as np

from fedra.errors import ConfigError, FedraError, RecordError
from fedra.privacy import DPFedAvg, clip_update
from fedra.records import ArraySpec, Message, Scalar, decode_message, encode_message
from fedra.runtime._events import RoundRecord
from fedra.runtime._replies import screen, verdict
from fedra.secagg import (
    ClientProtocol,
    ProtocolViolation,
    SecAggAborted,
    SecAggConfig,
    SecAggError,
    SecAggResult,
    ServerProtocol,
    Stage,
    default_parameters,
    rounding_sensitivity,
)
from fedra.secagg import decode_message as decode_secagg
from fedra.secagg import encode_message as encode_secagg
from fedra.transport.base import Buffer, Reply, Task, TaskBatch, Transport

__all__ = ["SECAGG_CONFIG", "SecureAggregation", "SecureClient", "SecureOutcome", "SecureTransport",
           "float_names"]

log = logging.getLogger("fedra.driver")

#: the task config key of a secure round: JSON with the protocol's config and the DP parameters
SECAGG_CONFIG: Final = "secagg"
#: the array that carries a protocol message inside a records message
_VECTOR: Final = "secagg"
#: protocol messages other than the masked input are a few KiB; this bounds what a client may send
_SMALL: Final = 16 << 20


def float_names(params: Mapping[str, np.ndarray]) -> list[str]:
    """The arrays secure aggregation sums: the floating-point ones, in the model's order."""
    return [name for name, a in params.items() if a.dtype.kind == "f"]


def _wrap(message: Any, meta: Mapping[str, Scalar], metrics: Mapping[str, Scalar] | None = None) -> memoryview:
    raw = encode_secagg(message)
    return encode_message(Message(arrays={_VECTOR: np.frombuffer(raw, np.uint8)}, metrics=dict(metrics or {}),
                                  meta=dict(meta)))


@dataclass(frozen=True, slots=True)
class SecureAggregation:
    """The server's settings (the job's ``[secagg]``): see :class:`fedra.job.SecAggSection`."""

    clip: float = 1.0
    degree: int | None = None
    threshold: int | None = None
    ring_bits: int = 32
    stage_timeout: float = 60.0
    #: examples a client's update can weigh at most (ignored under DP, where each client counts once)
    max_weight: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.max_weight, bool) or not isinstance(self.max_weight, int) or self.max_weight < 1:
            raise ConfigError(f"secagg.max_weight: expected an integer >= 1, got {self.max_weight!r}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"secagg.clip: expected a finite number > 0, got {self.clip!r}")
        if not self.stage_timeout > 0:
            raise ConfigError(f"secagg.stage_timeout: expected > 0 seconds, got {self.stage_timeout!r}")


@dataclass(slots=True)
class SecureOutcome:
    """What a secure round produced: the new model (``None`` when nothing was released) and its metrics."""

    model: dict[str, np.ndarray] | None
    metrics: dict[str, float]
    survivors: int = 0
    dropped: int = 0
    #: seconds of the server's own protocol work (receiving, relaying, unmasking), and of unmasking alone
    server_seconds: float = 0.0
    unmask_seconds: float = 0.0
    #: the effective noise multiplier charged (distributed DP), else None
    noise_multiplier: float | None = None
    notes: list[str] = field(default_factory=list)


@final
class SecureRound:
    """One round of secure aggregation, driven over a transport. Used by :class:`RoundDriver`."""

    def __init__(self, *, settings: SecureAggregation, transport: Transport, spec: ArraySpec, rnd: int,
                 run_token: str, round_timeout: float | None, max_payload_bytes: int, min_replies: int,
                 privacy: DPFedAvg | None, noise_seed: int | None) -> None:
        self.settings = settings
        self.transport = transport
        self.rnd = rnd
        self.run_token = run_token
        self.round_timeout = round_timeout
        self.max_payload_bytes = max_payload_bytes
        self.min_replies = min_replies
        self.privacy = privacy
        self.noise_seed = noise_seed
        #: under DP each client counts once; otherwise a weight coordinate follows the update
        self.weighted = privacy is None
        self.size = sum(int(np.prod(shape)) for _, (dtype, shape) in spec.items() if dtype.kind == "f")
        self.size += int(self.weighted)

    def protocol_config(self, selected: Sequence[str]) -> SecAggConfig:
        s = self.settings
        degree = s.degree if s.degree is not None else default_parameters(len(selected))[0]
        degree = min(degree, len(selected) - 1)
        threshold = s.threshold if s.threshold is not None else (degree + 1) // 2 + 1
        return SecAggConfig.create(round_id=f"{self.run_token}/r{self.rnd}", clients=tuple(selected), size=self.size,
                                   clip=s.clip, degree=degree, threshold=threshold, ring_bits=s.ring_bits)

    def task_config(self, protocol: SecAggConfig) -> str:
        dp = self.privacy
        doc: dict[str, Any] = {"protocol": protocol.to_dict(), "clip_norm": None, "noise_stddev": 0.0,
                               "noise_seed": self.noise_seed,
                               "max_weight": self.settings.max_weight if self.weighted else None}
        if dp is not None:
            doc["clip_norm"] = dp.clip_norm
            doc["noise_stddev"] = dp.noise_multiplier * dp.clip_norm / math.sqrt(self.min_replies)
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    def run(self, payload: Buffer, protocol: SecAggConfig, rec: RoundRecord,
            params: Mapping[str, np.ndarray]) -> SecureOutcome:
        """Run the round whose train payload (carrying ``protocol`` and the global model ``params``) is
        ``payload``; fill ``rec``."""
        selected = protocol.clients
        server = ServerProtocol(protocol)
        busy = 0.0
        tasks = tuple(Task(task_id=f"r{self.rnd}.{i}", client_id=cid, nonce=secrets.token_hex(8))
                      for i, cid in enumerate(selected))
        sums: dict[str, float] = {}
        examples = 0
        outgoing: list[Any] = []
        try:
            for i, msg, reply in self._collect(TaskBatch("train", self.rnd, payload, tasks), self.round_timeout,
                                               rec, first=True):
                n = msg.meta.get("num_examples")
                if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                    self._refuse(reply, rec, "invalid num_examples", f"expected num_examples to be a positive "
                                 f"integer, got {n!r}")
                    continue
                t0 = time.perf_counter()
                got = self._deliver(server, msg, reply, rec)
                busy += time.perf_counter() - t0
                if got is None:
                    continue
                outgoing = got
                rec.participants.append(tasks[i].client_id)
                examples += n
                for k, v in msg.metrics.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        sums[k] = sums.get(k, 0.0) + float(v) * n
            rec.num_examples = examples
            metrics = {k: v / examples for k, v in sums.items()} if examples else {}
            unmask = 0.0
            for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK):
                if server.stage < stage:  # not every client answered: the deadline closes the stage
                    t0 = time.perf_counter()
                    outgoing = server.close_stage()
                    busy += time.perf_counter() - t0
                if stage is Stage.UNMASK and len(outgoing) < self.min_replies:
                    rec.fail("too few masked inputs to unmask")
                    log.warning("round %d: %d masked inputs arrived, min_replies = %d: nothing is unmasked",
                                self.rnd, len(outgoing), self.min_replies)
                    return SecureOutcome(None, metrics, server_seconds=busy,
                                         notes=[f"{len(outgoing)} masked inputs < min_replies = "
                                                f"{self.min_replies}: nothing was unmasked"])
                outgoing, spent = self._stage(server, stage, outgoing, rec)
                busy += spent
                if stage is Stage.UNMASK:
                    unmask = spent
            if not server.done:
                t0 = time.perf_counter()
                server.close_stage()
                unmask += time.perf_counter() - t0
                busy += time.perf_counter() - t0
        except SecAggAborted as exc:
            rec.fail("secure aggregation aborted")
            log.warning("round %d: %s", self.rnd, exc)
            return SecureOutcome(None, {}, server_seconds=busy, notes=[str(exc)])
        result = server.result
        assert result is not None
        rec.accepted = len(result.survivors)
        rec.participants = [c for c in rec.participants if c in set(result.survivors)]
        outcome = SecureOutcome(None, metrics, survivors=len(result.survivors), dropped=len(result.dropped),
                                server_seconds=busy, unmask_seconds=unmask)
        if len(result.survivors) < self.min_replies:
            rec.fail("too few survivors")
            outcome.notes.append(f"{len(result.survivors)} survivors < min_replies = {self.min_replies}")
            return outcome
        outcome.model = self._release(result, outcome, params)
        return outcome

    # -- steps -------------------------------------------------------------------------------------------

    def _collect(self, batch: TaskBatch, timeout: float | None, rec: RoundRecord, *, first: bool = False
                 ) -> Iterator[tuple[int, Message, Reply]]:
        """Yield ``(task index, decoded message, reply)`` for each reply that passes the common checks."""
        index = {t.task_id: i for i, t in enumerate(batch.tasks)}
        done = [False] * len(batch.tasks)
        for reply in self.transport.exchange(batch, timeout=timeout):
            i = screen(reply, batch.tasks, index, done, rec, self.rnd)
            if i is None:
                continue
            done[i] = True
            if first:
                rec.replies += 1
            task = batch.tasks[i]
            if reply.error is not None or reply.payload is None:
                reason = reply.error or "empty reply"
                self._refuse(reply, rec, f"client error: {reason.splitlines()[0][:200]}", f"client error: {reason[:1000]}")
                continue
            try:
                limit = self.max_payload_bytes if batch.kind == "secagg" else _SMALL
                msg = decode_message(reply.payload, max_bytes=limit, what=f"secure aggregation reply from "
                                     f"{task.client_id!r}")
                if set(msg.arrays) != {_VECTOR} or msg.arrays[_VECTOR].dtype != np.uint8:
                    raise RecordError(f"expected one uint8 array {_VECTOR!r}, got {sorted(msg.arrays)}")
            except RecordError as exc:
                self._refuse(reply, rec, type(exc).__name__, f"{type(exc).__name__}: {exc}")
                continue
            if msg.meta.get("task_id") != task.task_id or msg.meta.get("nonce") != task.nonce:
                self._refuse(reply, rec, "task id or nonce mismatch",
                             f"expected the reply to carry task {task.task_id}'s id and nonce; it does not")
                continue
            yield i, msg, reply

    def _refuse(self, reply: Reply, rec: RoundRecord, reason: str, why: str) -> None:
        rec.fail(reason)
        log.warning("round %d: client %r: %s", self.rnd, reply.client_id, why)
        verdict(reply, why)

    def _deliver(self, server: ServerProtocol, msg: Message, reply: Reply, rec: RoundRecord) -> list[Any] | None:
        """Hand the protocol message to the server; the next stage's messages if it completed the stage."""
        try:
            message = decode_secagg(msg.arrays[_VECTOR].data)
            if message.header.sender != reply.client_id:
                raise ProtocolViolation(f"the message is signed {message.header.sender!r}, its task's client is "
                                        f"{reply.client_id!r}")
            out = server.receive(message)
        except (ProtocolViolation, RecordError) as exc:
            self._refuse(reply, rec, "secure aggregation message refused", f"{type(exc).__name__}: {exc}")
            return None
        verdict(reply, None)
        return out

    def _stage(self, server: ServerProtocol, stage: Stage, messages: Sequence[Any], rec: RoundRecord
               ) -> tuple[list[Any], float]:
        """Send one stage's messages, each to its client; feed the replies in. Returns the next messages."""
        tasks = []
        for j, m in enumerate(messages):
            meta: dict[str, Scalar] = {"kind": "secagg", "round": self.rnd, "stage": int(stage)}
            tasks.append(Task(task_id=f"r{self.rnd}.s{int(stage)}.{j}", client_id=m.header.recipient,
                              nonce=secrets.token_hex(8), payload=_wrap(m, meta)))
        busy = 0.0
        outgoing: list[Any] = []
        for _, msg, reply in self._collect(TaskBatch("secagg", self.rnd, b"", tuple(tasks)),
                                           self.settings.stage_timeout, rec):
            t0 = time.perf_counter()
            got = self._deliver(server, msg, reply, rec)
            busy += time.perf_counter() - t0
            if got:
                outgoing = got
        return outgoing, busy

    def _release(self, result: SecAggResult, outcome: SecureOutcome,
                 params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = result.total
        dp = self.privacy
        if dp is None:
            denominator = float(total[-1]) / self.settings.clip  # the survivors' weights, summed
            if not denominator > 0:
                raise SecAggError(f"secure aggregation: the survivors' weights sum to {denominator!r}; expected > 0")
        else:
            denominator = dp.expected_clients
            shares = self.min_replies
            growth = rounding_sensitivity(size=self.size, clip_norm=dp.clip_norm, clip=self.settings.clip,
                                          ring_bits=self.settings.ring_bits, max_clients=result.max_clients)
            z = dp.noise_multiplier * math.sqrt(len(result.survivors) / shares) / growth
            dp.charge_distributed_round(noise_multiplier=z)
            outcome.noise_multiplier = z
        model: dict[str, np.ndarray] = {}
        offset = 0
        for name, g in params.items():
            if g.dtype.kind != "f":
                model[name] = np.array(g)
                continue
            part = total[offset:offset + g.size].reshape(g.shape)
            offset += g.size
            model[name] = np.add(g, part / denominator, dtype=np.float64).astype(g.dtype, copy=False)
        return model


# -- the client's side --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    protocol: ClientProtocol
    round: int


@final
class SecureClient:
    """The client's half: one :class:`~fedra.secagg.ClientProtocol` per round it takes part in.

    One instance serves one client process (gRPC), or every virtual client of a simulation (sessions are
    kept by round id and client). :meth:`start` turns a training reply into the first protocol message
    and keeps the update; :meth:`step` answers each ``secagg`` task. A session ends when its client sent
    its unmask shares, refused a message, or a newer round began.
    """

    def __init__(self, *, max_sessions: int = 100_000) -> None:
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._max = max_sessions
        #: CPU seconds (of the calling threads) spent in the protocol: quantizing, noising, key agreement,
        #: sharing, encrypting, masking, and coding its messages; not the training
        self.cpu_seconds = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def wants(config: Mapping[str, Scalar]) -> bool:
        """Whether a training task's config asks for secure aggregation."""
        return SECAGG_CONFIG in config

    def start(self, global_message: Message, task: Task, reply: Buffer, *, round: int) -> memoryview:
        """Replace a training reply (the trained model) by the client's advertised keys."""
        try:
            doc = json.loads(str(global_message.config[SECAGG_CONFIG]))
            protocol = SecAggConfig.from_dict(doc["protocol"])
            clip_norm, stddev, seed = doc["clip_norm"], float(doc["noise_stddev"]), doc["noise_seed"]
            max_weight = doc["max_weight"]
            if max_weight is not None and (not isinstance(max_weight, int) or max_weight < 1):
                raise ValueError(f"max_weight {max_weight!r} is not an integer >= 1")
        except (KeyError, TypeError, ValueError, SecAggError) as exc:
            raise SecAggError(f"secure aggregation: the task's {SECAGG_CONFIG!r} config is not valid: {exc}; "
                                "the server and this client may run different fedra versions") from exc
        t0 = time.thread_time()
        trained = decode_message(reply)
        names = float_names(global_message.arrays)
        delta = {n: np.subtract(trained.arrays[n], global_message.arrays[n], dtype=np.float64) for n in names}
        if clip_norm is not None:
            delta, _ = clip_update(delta, clip_norm=float(clip_norm))
        parts = [delta[n].reshape(-1) for n in names]
        if max_weight is not None:
            examples = trained.meta.get("num_examples")
            if not isinstance(examples, int) or isinstance(examples, bool) or examples <= 0:
                raise SecAggError(f"secure aggregation: expected a positive num_examples, got {examples!r}")
            ratio = min(examples, max_weight) / max_weight
            # the weight travels as ratio * clip: inside the ring's bound whatever the clip
            parts = [p * ratio for p in parts] + [np.array([ratio * protocol.clip])]
        vector = np.concatenate(parts) if parts else np.zeros(0)
        clipped = float(np.mean(np.abs(vector) > protocol.clip)) if vector.size else 0.0
        noise_rng = None
        if stddev:
            entropy = None if seed is None else [int(seed), round, protocol.abscissa(task.client_id)]
            noise_rng = np.random.default_rng(entropy)
        protocol_client = ClientProtocol(protocol, task.client_id, vector, noise_stddev=stddev, noise_rng=noise_rng)
        out = protocol_client.start()
        self._forget(lambda s: s.round < round)
        if len(self._sessions) >= self._max:
            raise SecAggError(f"secure aggregation: {self._max} sessions open at once; expected fewer")
        self._sessions[(protocol.round_id, task.client_id)] = _Session(protocol_client, round)
        meta = {k: v for k, v in trained.meta.items() if k in ("num_examples", "round")}
        meta.update(task_id=task.task_id, nonce=task.nonce, client_id=task.client_id)
        metrics = {**trained.metrics, "secagg_clipped": clipped}
        wrapped = _wrap(out[0], meta, metrics)
        self._count(time.thread_time() - t0)
        return wrapped

    def step(self, payload: Buffer, task: Task) -> memoryview:
        """Answer one ``secagg`` task: the server's message in, this client's next message out."""
        t0 = time.thread_time()
        try:
            return self._step(payload, task)
        finally:
            self._count(time.thread_time() - t0)

    def _count(self, seconds: float) -> None:
        with self._lock:
            self.cpu_seconds += seconds

    def _step(self, payload: Buffer, task: Task) -> memoryview:
        msg = decode_message(payload, what="secure aggregation task")
        if set(msg.arrays) != {_VECTOR}:
            raise SecAggError(f"secure aggregation task: expected one array {_VECTOR!r}, got {sorted(msg.arrays)}")
        message = decode_secagg(msg.arrays[_VECTOR].data)
        header = message.header
        if header.recipient != task.client_id:
            raise SecAggError(f"secure aggregation task for {task.client_id!r} carries a message for "
                                f"{header.recipient!r}")
        key = (header.round_id, task.client_id)
        session = self._sessions.get(key)
        if session is None:
            raise SecAggError(f"secure aggregation: no round {header.round_id!r} in progress here (this "
                                "client restarted, or its session ended); it counts as a dropout")
        try:
            out = session.protocol.receive(message)
        except FedraError:
            self._sessions.pop(key, None)
            raise
        if session.protocol.done or session.protocol.failed or not out:
            self._sessions.pop(key, None)
        if not out:
            raise SecAggError(f"secure aggregation: nothing to answer to a stage-{int(header.stage)} message")
        meta: dict[str, Scalar] = {"task_id": task.task_id, "nonce": task.nonce, "client_id": task.client_id,
                                   "round": session.round}
        return _wrap(out[0], meta)

    def _forget(self, old: Any) -> None:
        for key in [k for k, s in self._sessions.items() if old(s)]:
            del self._sessions[key]

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)


@final
class SecureTransport(Transport):
    """A transport whose clients run secure aggregation in this process: the simulation's.

    Training runs where ``inner`` runs it (the simulation's worker pool); the protocol's client side runs
    here, on the trained models that come back, so the driver speaks to simulated clients exactly as it
    speaks to networked ones.
    """

    def __init__(self, inner: Transport, *, threads: int | None = None) -> None:
        self.inner = inner
        self.client = SecureClient()
        self.threads = threads if threads is not None else max(1, min(4, os.cpu_count() or 1))

    def _step(self, batch: TaskBatch, task: Task) -> Reply:
        try:
            out = self.client.step(batch.payload_of(task), task)
        except FedraError as exc:
            return Reply(task.task_id, task.client_id, error=f"{type(exc).__name__}: {exc}")
        return Reply(task.task_id, task.client_id, payload=out)

    def clients(self) -> Sequence[str]:
        return self.inner.clients()

    def wait_for_clients(self, n: int, *, timeout: float) -> Sequence[str]:
        return self.inner.wait_for_clients(n, timeout=timeout)

    def late_replies(self) -> int:
        return self.inner.late_replies()

    @property
    def reorder_window(self) -> int | None:
        return self.inner.reorder_window

    def close(self) -> None:
        self.inner.close()

    def exchange(self, batch: TaskBatch, *, timeout: float | None) -> Iterator[Reply]:
        if batch.kind == "secagg":
            # a few threads: the masks' AES-CTR and numpy's sums run outside the GIL, and each task is
            # one client's own session; replies are yielded in task order, as they would come back
            with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="fedra-secagg") as pool:
                yield from pool.map(lambda task: self._step(batch, task), batch.tasks)
            return
        message = decode_message(batch.payload) if batch.kind == "train" else None
        tasks = {t.task_id: t for t in batch.tasks}
        for reply in self.inner.exchange(batch, timeout=timeout):
            mine = tasks.get(reply.task_id)
            if message is None or not SecureClient.wants(message.config) or reply.payload is None or mine is None:
                yield reply
                continue
            try:
                out = self.client.start(message, mine, reply.payload, round=batch.round)
            except FedraError as exc:
                yield Reply(reply.task_id, reply.client_id, error=f"{type(exc).__name__}: {exc}", ack=reply.ack)
                continue
            yield Reply(reply.task_id, reply.client_id, payload=out, ack=reply.ack)
