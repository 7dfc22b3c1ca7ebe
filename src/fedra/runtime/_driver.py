"""The round driver: the one loop every fedra job runs, in simulation and in deployment.

Each round it samples clients through the strategy, sends them one :class:`TaskBatch`, validates every
reply at the boundary (known task, right client, right nonce, once only, decodable, the model's exact
schema, finite values, within the size limit), folds accepted updates into the round's aggregate in task
order, asks the strategy for the next global model, evaluates, tells the observers and checkpoints.

Folding in task order, whatever order replies arrive in, is what makes a seeded simulation bit-identical
from run to run: a reply that arrives early waits (it is one of the "updates in flight") until every
earlier task has either been folded or is known to have failed.

With client-level differential privacy (a :class:`~fedra.privacy.DPFedAvg`, McMahan et al. 2018) the
fold changes, nothing else does: each accepted reply becomes its delta against the round's global model
(floating-point arrays only), clipped and summed in float64 in the same task order
(:meth:`DPFedAvg.accumulate`, the streaming form of :meth:`DPFedAvg.prepare`); at the end of the round :meth:`DPFedAvg.finish_round` noises the sum and divides it by the
fixed denominator. The strategy then receives ``global + noised mean delta`` as the round's aggregate,
exactly where it receives the mean model without DP, so every server optimizer (FedAvg, FedAdam, ...)
applies unchanged: each reads the aggregate as ``global + delta`` (FedAvg with lr 1 takes it as the new
model; the others recover ``delta = aggregate - global``), and anything computed from a DP release is
still DP (post-processing). Each client counts once, whatever its ``num_examples``: the example count is
neither bounded nor private. Non-floating arrays (counters) keep the global model's value under DP: an
integer update cannot be clipped or noised, and keeping it constant releases nothing.

Before each round the driver asks :meth:`DPFedAvg.can_run_round`; when one more round would spend more
than ``max_epsilon`` the job stops there (:attr:`RunResult.stop_reason`, and the last round's record
says why). Every round that sampled clients is charged, a round below the quorum included
(:meth:`DPFedAvg.skip_round`). The DP state and the noise generator's entropy are saved as the extra
state ``"privacy"`` of every checkpoint, so a resumed run continues the same epsilon and the same noise.

Robustness. Two options make the driver hold a round's accepted updates until the exchange is over
instead of streaming them into the fold (the mean's streaming fold is untouched when both are off):

- ``quarantine`` (a :class:`~fedra.strategy.QuarantinePolicy`): before sampling, clients whose quarantine
  ended are released and those still quarantined are left out of the sample; after aggregating, every
  update's delta is scored (:func:`fedra.aggregation.update_scores`: norm, cosine to the aggregate delta,
  distance to its nearest peers) and the policy updates each client's reputation. Every decision is a
  :class:`~fedra.strategy.QuarantineEvent` in the round's record (``events``, so in metrics.jsonl); the
  :class:`~fedra.strategy.ReputationState` is the checkpoint's extra state ``"quarantine"``, so a resumed
  run keeps its quarantines. Scoring needs each update in the clear: it is refused with DP (the sample would
  then depend on individual updates, which the accountant does not count) and cannot run under secure
  aggregation.
- ``update_hook`` (an :data:`UpdateHook`): sees the round's accepted models, in task order, with their
  clients, and returns the models to aggregate in their place. It is the seam for the simulation's
  attack simulator (colluding attackers need the whole round's honest updates, which a transport that sees
  replies one at a time cannot give); the production server passes none.

FLTrust (``aggregator = "fltrust"``) needs the server's own model trained on its root dataset each round:
the driver gets it from ``root_trainer`` (global model and round in, trained model out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import numpy as np

from fedra.aggregation import update_scores
from fedra.errors import AggregationError, ConfigError, RecordError, StateError
from fedra.privacy import DPFedAvg
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
from fedra.runtime._replies import screen, verdict
from fedra.strategy import (
    QuarantineEvent,
    QuarantinePolicy,
    ReputationState,
    RoundAggregate,
    Strategy,
    StrategyState,
)
from fedra.transport.base import Task, TaskBatch, TaskKind, Transport

if TYPE_CHECKING:  # secure aggregation loads cryptography: only a job that uses it pays for the import
    from fedra.runtime._secure import SecureAggregation, SecureOutcome

__all__ = ["QUARANTINE_STATE", "DriverConfig", "RootTrainer", "RoundDriver", "RunResult", "UpdateHook",
           "model_digest"]

log = logging.getLogger("fedra.driver")

Arrays = Mapping[str, np.ndarray]
#: Centralised evaluation: global model in, metrics out.
Evaluator = Callable[[Arrays], dict[str, float]]
#: The round's accepted models in: (round, client ids, models, global model); the models to aggregate out.
UpdateHook = Callable[[int, Sequence[str], Sequence[Arrays], Arrays], Sequence[Arrays]]
#: FLTrust's server training: (global model, round) in, the model after training on the root data out.
RootTrainer = Callable[[Arrays, int], Arrays]


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
    #: why the job stopped before its last round (the privacy budget), or None when it ran them all
    stop_reason: str | None = None
    #: run-level results beside the records (the simulation's attack and quarantine report), JSON-ready
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return model_digest(self.params)


def _round_seed(seed: int, rnd: int) -> int:
    return int(np.random.SeedSequence([seed, rnd, 0x7A5C]).generate_state(1, np.uint32)[0])


#: the checkpoint's extra-state name of the driver's privacy state
PRIVACY_STATE: Final = "privacy"
#: the checkpoint's extra-state name of the quarantine policy's reputation state
QUARANTINE_STATE: Final = "quarantine"
_PRIVACY_FORMAT: Final = "fedra.driver.privacy/1"
_NOISE_TAG: Final = 0xD9F0


def _noise_generator(entropy: int, rnd: int) -> np.random.Generator:
    """The DP noise generator of round ``rnd``: a function of the entropy and the round only.

    Derived per round rather than one stream, so a resumed run draws the same noise without replaying
    the draws of the rounds before it.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([entropy, rnd, _NOISE_TAG])))


class _Fold(Protocol):
    """What :class:`_InOrder` folds into: a :class:`RoundAggregate`, or :class:`_DPFold` under DP."""

    @property
    def count(self) -> int: ...

    def add(self, arrays: Arrays, weight: float) -> None: ...


@final
class _DPFold:
    """One round under DP: each update's delta against the global model, clipped, summed in float64."""

    def __init__(self, dp: DPFedAvg, global_params: Arrays) -> None:
        self._dp = dp
        self._global = global_params
        self._names = [name for name, a in global_params.items() if a.dtype.kind == "f"]
        self._sum = {name: np.zeros(global_params[name].shape, np.float64) for name in self._names}
        # one float64 buffer for the update being folded: a fresh one per update would cost page faults
        self._delta = {name: np.empty(global_params[name].shape, np.float64) for name in self._names}
        self._count = 0
        self._within = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, arrays: Arrays, weight: float) -> None:
        # ``weight`` (num_examples) is ignored on purpose: client-level DP bounds each client's
        # contribution by the clip norm, which an unbounded, non-private example count would undo.
        for name in self._names:
            np.subtract(arrays[name], self._global[name], out=self._delta[name], dtype=np.float64)
        within = self._dp.accumulate(self._sum, self._delta)
        self._count += 1
        self._within += int(within)

    def release(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Noise the sum, take the mean delta, and return ``global + mean delta`` in the model's dtypes."""
        mean = self._dp.finish_round(self._sum, received=self._count, unclipped_count=self._within, rng=rng)
        out: dict[str, np.ndarray] = {}
        for name, g in self._global.items():
            if name in mean:
                out[name] = np.add(g, mean[name], dtype=np.float64).astype(g.dtype, copy=False)
            else:
                out[name] = np.array(g)
        return out


@final
class _Collect:
    """Holds a round's accepted updates, in task order, until the exchange is over (robustness options)."""

    def __init__(self) -> None:
        self.items: list[tuple[Arrays, float]] = []

    @property
    def count(self) -> int:
        return len(self.items)

    def add(self, arrays: Arrays, weight: float) -> None:
        self.items.append((arrays, weight))


@dataclass(frozen=True, slots=True)
class _Held:
    """A round's accepted updates as aggregated (after the hook), with their clients, for scoring."""

    client_ids: list[str]
    models: list[Arrays]


@final
class _InOrder:
    """Folds replies into the aggregate in task order; replies that arrive early wait in ``ready``.

    At most ``window`` of them wait (``None``: any number; see :attr:`Transport.reorder_window`): past it,
    the lowest waiting reply is folded at once, ahead of the earlier task it waited for, which is folded
    when (if) its reply comes. The sum's rounding then depends on the order the replies came in; with the
    replies in task order, or never more than ``window`` ahead of the first missing one, it does not.
    """

    def __init__(self, aggregate: _Fold, num_tasks: int, window: int | None = None) -> None:
        self.aggregate = aggregate
        self.window = window
        self.ready: dict[int, tuple[Arrays, float]] = {}
        self.done = [False] * num_tasks
        self.next = 0
        #: the task index of every update folded, in folding order
        self.folded: list[int] = []
        #: updates folded ahead of an earlier task that had not answered yet
        self.ahead = 0

    def settle(self, index: int, item: tuple[Arrays, float] | None) -> None:
        """Task ``index`` is finished: with an update to fold, or ``None`` when it failed."""
        self.done[index] = True
        if item is not None:
            self.ready[index] = item
        while self.next < len(self.done) and self.done[self.next]:
            got = self.ready.pop(self.next, None)
            if got is not None:
                self.aggregate.add(*got)
                self.folded.append(self.next)
            self.next += 1
        while self.window is not None and len(self.ready) > self.window:
            lowest = min(self.ready)
            self.aggregate.add(*self.ready.pop(lowest))
            self.folded.append(lowest)
            self.ahead += 1

    def drain(self) -> None:
        """The exchange is over: fold what arrived, in task order, skipping tasks that never answered."""
        for index in sorted(self.ready):
            self.aggregate.add(*self.ready.pop(index))
            self.folded.append(index)


@final
class RoundDriver:
    """Runs a job's rounds over a transport. One instance runs one job.

    Parameters
    ----------
    privacy
        Client-level DP (:class:`~fedra.privacy.DPFedAvg`), or ``None`` for none. Its state is restored
        from the checkpoint on resume.
    noise_seed
        The entropy of the DP noise. ``None`` (the default): 128 secret bits from the OS, kept in the
        checkpoint, so the released model cannot be de-noised by whoever knows the job spec. An integer
        (e.g. the job seed) makes the noise reproducible, for tests and audits only: anyone who knows
        it can subtract the noise.
    """

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
        privacy: DPFedAvg | None = None,
        noise_seed: int | None = None,
        quarantine: QuarantinePolicy | None = None,
        update_hook: UpdateHook | None = None,
        root_trainer: RootTrainer | None = None,
        secure: SecureAggregation | None = None,
    ) -> None:
        if quarantine is not None and privacy is not None:
            raise ConfigError(
                "quarantine with privacy: expected one of them. Quarantine decisions depend on each client's "
                "update in the clear, so who is sampled next would leak individual updates, which the DP "
                "accountant does not count; drop the quarantine policy or the privacy")
        if secure is not None:
            if strategy.aggregator.kind != "mean" or quarantine is not None or update_hook is not None:
                raise ConfigError(
                    "secure aggregation: expected the mean aggregator and no quarantine or update hook, got "
                    f"aggregator {strategy.aggregator.kind!r}, quarantine={quarantine is not None}, update_hook="
                    f"{update_hook is not None}; the server sees only the sum, so nothing may look at each update")
            if privacy is not None and (privacy.config.mode != "client" or privacy.config.adaptive is not None):
                raise ConfigError(
                    f"secure aggregation with privacy mode {privacy.config.mode!r}: expected mode 'client' without "
                    "adaptive clipping (the clients clip and add the noise in shares)")
            if config.min_replies < 2:
                raise ConfigError(f"secure aggregation: expected min_replies >= 2 (a sum of one update is that "
                                  f"update), got {config.min_replies}")
        if strategy.aggregator.kind == "fltrust" and root_trainer is None:
            raise ConfigError("aggregator 'fltrust': expected a root_trainer (the server's training on its "
                              "root dataset), got none; pass root_trainer= or choose another aggregator")
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
        self.privacy = privacy
        self.stop_reason: str | None = None
        self._noise_entropy = secrets.randbits(128) if noise_seed is None else int(noise_seed)
        self.quarantine = quarantine
        self.update_hook = update_hook
        self.root_trainer = root_trainer
        self.secure = secure
        #: names this run's secure rounds (a resumed run uses a new one: no round id is ever reused)
        self._run_token = secrets.token_hex(6)
        self._noise_seed = noise_seed
        self.reputation = ReputationState()
        #: every quarantine decision of this run (this process: not those before a resume)
        self.quarantine_events: list[QuarantineEvent] = []
        if checkpoints is not None and (ckpt := checkpoints.load()) is not None:
            if ArraySpec.of(ckpt.params) != self.spec:
                raise ConfigError(
                    f"checkpoint in {checkpoints.directory} holds a different model: expected "
                    f"{self.spec}, found {ArraySpec.of(ckpt.params)}; use a new output directory"
                )
            self.params, self.state = ckpt.params, ckpt.state
            self.registry = {c.name: c for c in ckpt.clients}
            self._restore_privacy(ckpt.extra.get(PRIVACY_STATE), ckpt.round, checkpoints.directory)
            if quarantine is not None and (saved := ckpt.extra.get(QUARANTINE_STATE)) is not None:
                self.reputation = ReputationState.from_json(saved)
            log.info("resuming after round %d from %s", ckpt.round, checkpoints.directory)

    # -- privacy ---------------------------------------------------------------------------------
    def _privacy_state(self) -> bytes:
        assert self.privacy is not None
        state = {"format": _PRIVACY_FORMAT, "noise_entropy": self._noise_entropy,
                 "dpfedavg": json.loads(self.privacy.state_bytes())}
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode()

    def _restore_privacy(self, data: bytes | None, rnd: int, where: object) -> None:
        if self.privacy is None:
            if data is not None:
                log.warning("the checkpoint in %s holds privacy state but this job has no [privacy]; "
                            "the rounds after %d are not differentially private", where, rnd)
            return
        if data is None:
            if rnd > 0:
                raise ConfigError(
                    f"checkpoint in {where} (after round {rnd}): expected the privacy state of a job with "
                    "[privacy], found none: it was written without differential privacy, so its rounds "
                    "spent an unbounded epsilon; start the private job in a new output directory")
            return
        try:
            state = json.loads(data.decode("utf-8"))
            if not isinstance(state, dict) or state.get("format") != _PRIVACY_FORMAT:
                raise ValueError(f"expected format {_PRIVACY_FORMAT!r}")
            entropy = state["noise_entropy"]
            if not isinstance(entropy, int) or isinstance(entropy, bool) or entropy < 0:
                raise ValueError(f"expected a non-negative integer noise_entropy, got {entropy!r}")
            dp_state = json.dumps(state["dpfedavg"]).encode()
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise StateError(f"checkpoint in {where}: cannot restore the privacy state: {exc}") from exc
        self.privacy.load_state(dp_state)
        self._noise_entropy = entropy

    def _budget_stop(self, rnd: int) -> str | None:
        """Why round ``rnd`` must not run (the next round would exceed ``max_epsilon``), else None."""
        dp = self.privacy
        if dp is None or dp.can_run_round():
            return None
        eps, delta = dp.spent()
        return (f"privacy budget: round {rnd} would spend more than privacy.max_epsilon = "
                f"{dp.config.max_epsilon:g} (spent so far: epsilon {eps:.4g} at delta {delta:g}); "
                f"the job stops after round {rnd - 1} of {self.config.rounds}")

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
        if start < self.config.rounds and (why := self._budget_stop(start + 1)) is not None:
            self.stop_reason = why  # resumed after the round that used the budget up
            log.warning("%s", why)
        for rnd in range(start + 1, self.config.rounds + 1):
            if self.stop_reason is not None:
                break
            self.run_round(rnd)
        self._notify("on_run_end", self.records)
        return RunResult(params=self.params, state=self.state, records=self.records,
                         stop_reason=self.stop_reason)

    def run_round(self, rnd: int) -> RoundRecord:
        t0 = time.perf_counter()
        rec = RoundRecord(round=rnd)
        late_before = self.transport.late_replies()
        available = self.transport.clients()
        need = self.strategy.sampler.min_clients
        if len(available) < need and self.config.client_wait > 0:
            available = self.transport.wait_for_clients(need, timeout=self.config.client_wait)
        events: list[QuarantineEvent] = []
        if self.quarantine is not None:
            self.reputation, events = self.quarantine.begin_round(self.reputation, round=rnd)
            out = self.reputation.quarantined()
            available = [c for c in available if c not in out]
        sampled = True
        try:
            selected, state = self.strategy.sample(self.state, available)
        except AggregationError as exc:
            log.warning("round %d: %s", rnd, exc)
            rec.fail("not enough clients to start the round")
            selected, state, sampled = [], self.state, False
        rec.sampled = len(selected)
        config = dict(self.config.client_config or {})
        config.update(round=rnd, round_seed=_round_seed(self.config.seed, rnd))
        dp = self.privacy
        if dp is not None and dp.config.mode != "server" and self.secure is None:
            # what the client needs to clip (and in local mode to noise) its own update
            task = dp.task_config()
            config.update(dp_mode=dp.config.mode, dp_clip_norm=task["clip_norm"])
            if "noise_multiplier" in task:
                config["dp_noise_multiplier"] = task["noise_multiplier"]
        secured: SecureOutcome | None = None
        aggregate: RoundAggregate | _DPFold | None = None
        held: _Held | None = None
        if self.secure is not None:
            secured = self._secure_exchange(rnd, selected, config, rec)
            metrics = secured.metrics
        else:
            aggregate, metrics, held = self._exchange("train", rnd, selected, config, rec, state)
        t1 = time.perf_counter()
        charged = secured is not None and secured.noise_multiplier is not None
        if rec.accepted >= self.config.min_replies and (secured is None or secured.model is not None):
            try:
                if secured is not None:
                    assert secured.model is not None
                    model = secured.model
                elif isinstance(aggregate, _DPFold):
                    charged = True  # finish_round charges the accountant, even if the strategy then fails
                    model = aggregate.release(_noise_generator(self._noise_entropy, rnd))
                else:
                    assert aggregate is not None
                    server = None if self.root_trainer is None else self.root_trainer(self.params, rnd)
                    model = aggregate.finish(server_model=server)
                if held is not None and self.quarantine is not None:
                    events += self._observe(rnd, held, model)
                new_params, state = self.strategy.update(state, self.params, model)
            except AggregationError as exc:
                log.warning("round %d: aggregation failed: %s", rnd, exc)
                rec.fail(f"aggregation: {exc}")
                state = state.advanced(round=rnd)
            else:
                self.params = new_params
                rec.completed = True
                rec.train_metrics = metrics
        elif secured is not None and secured.model is None:
            log.warning("round %d: secure aggregation released no sum (%s); the global model is unchanged",
                        rnd, "; ".join(secured.notes) or "see the warnings above")
            state = state.advanced(round=rnd)
        else:
            log.warning("round %d: %d accepted replies, %d required; the global model is unchanged",
                        rnd, rec.accepted, self.config.min_replies)
            state = state.advanced(round=rnd)
        if dp is not None:
            if sampled and not charged:
                dp.skip_round()  # clients were sampled: whether the quorum came depends on who they were
            rec.epsilon, rec.delta = dp.spent()
            rec.clip_norm = dp.clip_norm
        self.state = state
        if self.quarantine is not None:
            rec.events = [e.to_dict() for e in events]
            self.quarantine_events += events
        t2 = time.perf_counter()
        every = self.config.evaluate_every
        if self.evaluator is not None and (rnd == self.config.rounds or (every and rnd % every == 0)):
            rec.eval_metrics = self.evaluator(self.params)
        t3 = time.perf_counter()
        self._update_registry(rnd, selected, rec.participants)
        if self.checkpoints is not None:
            extra = {} if dp is None else {PRIVACY_STATE: self._privacy_state()}
            if self.quarantine is not None:
                extra[QUARANTINE_STATE] = self.reputation.to_json().encode()
            self.checkpoints.save(rnd, self.params, self.state, clients=self.registry.values(), extra=extra)
        t4 = time.perf_counter()
        rec.seconds = {"train": t1 - t0, "aggregate": t2 - t1, "evaluate": t3 - t2, "checkpoint": t4 - t3,
                       "total": t4 - t0}
        if late := self.transport.late_replies() - late_before:
            rec.late_replies = late
        if rnd < self.config.rounds and (why := self._budget_stop(rnd + 1)) is not None:
            rec.stop_reason = self.stop_reason = why
            log.warning("%s", why)
        self.records.append(rec)
        self._notify("on_round_end", rec)
        return rec

    def _observe(self, rnd: int, held: _Held, model: Arrays) -> list[QuarantineEvent]:
        """Score the round's updates against its aggregate; fold the scores into the reputations."""
        assert self.quarantine is not None
        names = [n for n, a in self.params.items() if a.dtype.kind == "f"]
        if not names or len(held.models) < 2:
            return []

        def delta(m: Arrays) -> dict[str, np.ndarray]:
            return {n: np.subtract(m[n], self.params[n], dtype=np.float64) for n in names}

        f = self.strategy.aggregator.num_byzantine
        scores = update_scores([delta(m) for m in held.models], aggregate=delta(model),
                               num_neighbours=max(1, len(held.models) - f - 2))
        self.reputation, events = self.quarantine.observe(self.reputation, round=rnd,
                                                          client_ids=held.client_ids, scores=scores)
        for e in events:
            log.warning("round %d: client %r quarantined until round %s: %s", rnd, e.client, e.until, e.reason)
        return events

    def _update_registry(self, rnd: int, sampled: Sequence[str], took_part: Sequence[str]) -> None:
        done = set(took_part)
        for name in sampled:
            old = self.registry.get(name) or ClientRecord(name, first_seen=rnd, last_seen=rnd)
            if name in done:
                old = replace(old, last_seen=rnd, rounds_participated=old.rounds_participated + 1)
            self.registry[name] = old

    def _secure_exchange(self, rnd: int, selected: Sequence[str], config: dict[str, Scalar],
                         rec: RoundRecord) -> SecureOutcome:
        """A round under secure aggregation (see :mod:`fedra.runtime._secure`): the new model comes back
        only if the protocol completed with at least ``min_replies`` survivors."""
        from fedra.runtime._secure import SECAGG_CONFIG, SecureOutcome, SecureRound
        from fedra.secagg import SecAggError

        assert self.secure is not None
        secure = SecureRound(settings=self.secure, transport=self.transport, spec=self.spec, rnd=rnd,
                             run_token=self._run_token, round_timeout=self.config.round_timeout,
                             max_payload_bytes=self.config.max_payload_bytes, min_replies=self.config.min_replies,
                             privacy=self.privacy, noise_seed=self._noise_seed if self.privacy is not None else None)
        if len(selected) < 2:
            rec.fail("secure aggregation needs at least 2 clients")
            return SecureOutcome(None, {})
        try:
            protocol = secure.protocol_config(selected)
        except SecAggError as exc:
            rec.fail("secure aggregation: invalid parameters for this cohort")
            log.warning("round %d: %s", rnd, exc)
            return SecureOutcome(None, {})
        config[SECAGG_CONFIG] = secure.task_config(protocol)
        payload = encode_message(Message(arrays=self.params, config=config, meta={"kind": "train", "round": rnd}))
        self.params = dict(decode_message(payload, spec=self.spec).arrays)  # views, as in _exchange
        outcome = secure.run(payload, protocol, rec, self.params)
        rec.secagg = {"survivors": outcome.survivors, "dropped": outcome.dropped,
                      "server_seconds": round(outcome.server_seconds, 6),
                      "unmask_seconds": round(outcome.unmask_seconds, 6)}
        if outcome.noise_multiplier is not None:
            rec.secagg["noise_multiplier"] = outcome.noise_multiplier
        return outcome

    def _exchange(self, kind: TaskKind, rnd: int, selected: Sequence[str], config: Mapping[str, Scalar],
                  rec: RoundRecord, state: StrategyState
                  ) -> tuple[RoundAggregate | _DPFold, dict[str, float], _Held | None]:
        payload = encode_message(Message(arrays=self.params, config=config,
                                         meta={"kind": kind, "round": rnd}))
        # From here the global model is a view into the payload the clients are sent: the server holds
        # one copy of the model during the round, not two.
        self.params = dict(decode_message(payload, spec=self.spec).arrays)
        tasks = tuple(Task(task_id=f"r{rnd}.{i}", client_id=cid, nonce=secrets.token_hex(8))
                      for i, cid in enumerate(selected))
        index = {t.task_id: i for i, t in enumerate(tasks)}
        fold: RoundAggregate | _DPFold = (self.strategy.start_round(self.params, state) if self.privacy is None
                                          else _DPFold(self.privacy, self.params))
        hold = self.quarantine is not None or self.update_hook is not None
        collect = _Collect() if hold else None
        # collecting keeps every update anyway (in task order, for the hook and the scores); folding keeps
        # no more early replies than the transport can spare (see Transport.reorder_window)
        order = (_InOrder(collect, len(tasks)) if collect is not None
                 else _InOrder(fold, len(tasks), self.transport.reorder_window))
        sums: dict[str, float] = {}
        examples = 0
        for reply in self.transport.exchange(TaskBatch(kind, rnd, payload, tasks),
                                             timeout=self.config.round_timeout):
            i = screen(reply, tasks, index, order.done, rec, rnd)
            if i is None:
                continue
            rec.replies += 1
            item, why = self._accept(reply.payload, reply.error, tasks[i], rnd, rec)
            verdict(reply, why)
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
        if order.ahead:
            rec.folded_ahead = order.ahead
            log.info("round %d: %d updates folded ahead of an earlier task that had not answered yet (the "
                     "transport holds no more early replies); the sum's rounding follows their arrival",
                     rnd, order.ahead)
        held = None
        if collect is not None:
            ids = [tasks[i].client_id for i in order.folded]
            models = [a for a, _ in collect.items]
            if self.update_hook is not None and models:
                models = list(self.update_hook(rnd, ids, models, self.params))
                if len(models) != len(ids):
                    raise ConfigError(f"update_hook: expected {len(ids)} models back (one per update), "
                                      f"got {len(models)}")
            for m, (_, w) in zip(models, collect.items, strict=True):
                fold.add(m, w)
            held = _Held(ids, models)
        rec.accepted = fold.count
        rec.num_examples = examples
        return fold, ({k: v / examples for k, v in sums.items()} if examples else {}), held

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
