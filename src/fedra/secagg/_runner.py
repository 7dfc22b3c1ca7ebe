"""An in-process driver for one round of secure aggregation: it moves the messages between the machines.

The state machines do no I/O; something must carry their messages. :func:`run_secagg_round` is the
smallest such thing: a FIFO queue, every message encoded to bytes and decoded again (as a real transport
would), clients that drop out at a chosen stage, an ``intercept`` hook through which a test can drop,
alter, replay or reorder any message, and :meth:`~fedra.secagg.ServerProtocol.close_stage` called when no
message is left in flight (the stage's "deadline"). The simulation uses it as is; the round driver over
gRPC does the same steps with real deadlines.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedra.secagg._client import ClientProtocol
from fedra.secagg._config import SecAggConfig, SecAggResult
from fedra.secagg._errors import ProtocolViolation, SecAggError
from fedra.secagg._messages import SERVER_ID, Message, Stage, decode_message, encode_message
from fedra.secagg._server import ServerProtocol

__all__ = ["SeededRandomBytes", "run_secagg_round"]


class SeededRandomBytes:
    """A reproducible byte source (SHAKE-256 of a label and a counter), for tests and seeded simulations.

    Only for reproducing a run: anyone who knows the label knows every key derived from it. Deployments
    leave ``rng_seed`` unset and clients use ``os.urandom``.
    """

    def __init__(self, label: str) -> None:
        self._key = hashlib.sha256(label.encode()).digest()
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._key + self._counter.to_bytes(8, "little")).digest(n)


def run_secagg_round(
    updates: Mapping[str, np.ndarray],
    *,
    config: SecAggConfig,
    drop_at: Mapping[Stage, set[str]] | None = None,
    rng_seed: int | None = None,
    stochastic_rounding: bool = False,
    intercept: Callable[[Message], Sequence[Message]] | None = None,
    on_reject: Callable[[Message, ProtocolViolation], None] | None = None,
    server: ServerProtocol | None = None,
) -> SecAggResult:
    """Run one round of SecAgg+ in process and return the server's result.

    Parameters
    ----------
    updates
        ``{client_id: float update}`` for exactly ``config.clients``.
    config
        The round's parameters.
    drop_at
        ``{stage: clients}``: each named client sends nothing from that stage on (it crashed just before
        sending its message of that stage).
    rng_seed
        ``None``: keys and seeds from ``os.urandom``. An integer makes the whole round reproducible (keys,
        seeds, stochastic rounding) and must only be used in simulation and tests.
    stochastic_rounding
        Quantize with unbiased stochastic rounding instead of rounding to nearest.
    intercept
        Called with every message in flight; the messages it returns are delivered instead (return
        ``[]`` to drop, two copies to replay, a modified one to tamper).
    on_reject
        Called when a recipient refuses a message; by default refusals are silent (as a driver logs and
        carries on). A refusing client stops and is, to the server, a dropout.
    server
        A server state machine to use (tests pass an instrumented one); a new one by default.

    Raises
    ------
    SecAggAborted
        Too few clients survived a stage.
    """
    if set(updates) != set(config.clients):
        raise SecAggError(f"updates: expected one per client of the round {sorted(config.clients)}, got "
                          f"{sorted(updates)}")
    dropping: dict[str, Stage] = {}
    for stage, names in (drop_at or {}).items():
        for name in names:
            dropping[name] = min(dropping.get(name, stage), Stage(stage))
    clients = {}
    for cid in config.clients:
        rng = None
        random_bytes = SeededRandomBytes(f"{rng_seed}/{config.round_id}/{cid}") if rng_seed is not None \
            else None
        if stochastic_rounding:
            rng = np.random.default_rng([rng_seed or 0, config.clients.index(cid)]) if rng_seed is not None \
                else np.random.default_rng()
        if random_bytes is None:
            clients[cid] = ClientProtocol(config, cid, updates[cid], rng=rng)
        else:
            clients[cid] = ClientProtocol(config, cid, updates[cid], rng=rng, random_bytes=random_bytes)
    server = ServerProtocol(config) if server is None else server
    queue: deque[Message] = deque()

    def send(messages: Sequence[Message]) -> None:
        for message in messages:
            sender = message.header.sender
            if sender != SERVER_ID and message.header.stage >= dropping.get(sender, Stage.UNMASK + 1):
                continue
            queue.extend(intercept(message) if intercept is not None else [message])

    def reject(message: Message, exc: ProtocolViolation) -> None:
        if on_reject is not None:
            on_reject(message, exc)

    for client in clients.values():
        send(client.start())
    while not server.done:
        if not queue:
            send(server.close_stage())
            continue
        message = decode_message(encode_message(queue.popleft()))
        recipient = message.header.recipient
        if recipient == SERVER_ID:
            try:
                send(server.receive(message))
            except ProtocolViolation as exc:
                reject(message, exc)
            continue
        target = clients.get(recipient)
        if target is None or target.failed or message.header.stage >= dropping.get(recipient, Stage.UNMASK + 1):
            continue
        try:
            send(target.receive(message))
        except ProtocolViolation as exc:
            reject(message, exc)
    assert server.result is not None
    return server.result
