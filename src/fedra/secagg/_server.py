"""The server side of SecAgg+ as a sans-I/O state machine: messages in, messages out.

Bonawitz et al. (2017), Figure 4 (the server's rounds 0-4, semi-honest model) with Bell et al.'s (2020)
neighbourhoods. The driver feeds every client message to :meth:`ServerProtocol.receive`; when every client
still expected in the current stage has answered, the stage closes by itself and ``receive`` returns the
messages of the next one. At the stage's deadline the driver calls :meth:`ServerProtocol.close_stage`:
those who have not answered are dropped. After the last stage :attr:`ServerProtocol.result` holds the sum.

The server folds each masked input into one running sum as it arrives and keeps no individual vector. At
the end it removes the self-masks of the survivors (from shares of their seeds b) and the pairwise masks
that the survivors share with clients who dropped after sharing keys (from shares of the dropped clients'
mask keys s_sk); a client is never unmasked both ways, because each holder reveals only one of the two
secrets of a peer. When, at any stage, some client still in the round has fewer than t live holders, the
round aborts with :class:`~fedra.secagg.SecAggAborted` and no output.
"""

from __future__ import annotations

from enum import Enum
from typing import final

import numpy as np

from fedra.secagg._client import MASK_PURPOSE
from fedra.secagg._config import SecAggConfig, SecAggResult
from fedra.secagg._crypto import SHARE_CIPHERTEXT_BYTES, KeyPair, agree
from fedra.secagg._errors import ProtocolViolation, SecAggAborted, SecAggError
from fedra.secagg._messages import (
    SERVER_ID,
    AdvertiseKeys,
    Header,
    KeysBroadcast,
    MaskedInput,
    Message,
    RelayedShares,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskShares,
)
from fedra.secagg._prg import MaskBuffer
from fedra.secagg._shamir import reconstruct, share_from_bytes

__all__ = ["ServerProtocol"]

_KIND = {Stage.ADVERTISE_KEYS: AdvertiseKeys, Stage.SHARE_KEYS: ShareKeys,
         Stage.MASKED_INPUT: MaskedInput, Stage.UNMASK: UnmaskShares}


class _Phase(Enum):
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@final
class ServerProtocol:
    """The server's side of one round of SecAgg+.

    Parameters
    ----------
    config
        The round's public parameters, the same as every client's.

    Attributes
    ----------
    stage
        The stage whose client messages the server is collecting.
    result
        The round's :class:`~fedra.secagg.SecAggResult` once finished; ``None`` before and after an abort.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.stage = Stage.ADVERTISE_KEYS
        self.result: SecAggResult | None = None
        self._phase = _Phase.RUNNING
        self._expected: frozenset[str] = frozenset(config.clients)
        self._answered: set[str] = set()
        self._live: list[frozenset[str]] = []  # U1, U2, U3, U4: who answered each stage
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._public: set[bytes] = set()
        self._ciphertexts: dict[str, dict[str, bytes]] = {}
        self._sum: np.ndarray | None = np.zeros(config.size, dtype=config.dtype())
        self._self_mask_shares: dict[str, dict[int, int]] = {}
        self._key_shares: dict[str, dict[int, int]] = {}

    @property
    def done(self) -> bool:
        """Whether the round finished (with a result) or aborted."""
        return self._phase is not _Phase.RUNNING

    @property
    def aborted(self) -> bool:
        """Whether the round aborted."""
        return self._phase is _Phase.ABORTED

    @property
    def waiting_for(self) -> frozenset[str]:
        """The clients whose message for the current stage has not arrived yet."""
        return frozenset() if self.done else self._expected - self._answered

    # -- input ---------------------------------------------------------------------------------------------

    def receive(self, message: Message) -> list[Message]:
        """Take one client message; return the next stage's messages if it completed the stage, else [].

        Raises
        ------
        ProtocolViolation
            The message is not one the server expects now (another round, a past or future stage, a
            repeat, a sender not in this stage, a malformed body); it is dropped and nothing changes.
        SecAggAborted
            Closing the stage left too few clients; the round ends with no output.
        """
        self._check_header(message)
        if isinstance(message, AdvertiseKeys):
            self._on_keys(message)
        elif isinstance(message, ShareKeys):
            self._on_shares(message)
        elif isinstance(message, MaskedInput):
            self._on_masked(message)
        else:
            assert isinstance(message, UnmaskShares)
            self._on_unmask(message)
        self._answered.add(message.header.sender)
        if self._answered == self._expected:
            return self.close_stage()
        return []

    def _check_header(self, message: Message) -> None:
        h, cfg = message.header, self.config
        if self.done:
            raise ProtocolViolation(f"server: expected no message (the round is {self._phase.value}), got "
                                    f"{type(message).__name__} from {h.sender!r}; drop it")
        if h.round_id != cfg.round_id:
            raise ProtocolViolation(f"server: expected a message of round {cfg.round_id!r}, got one of round "
                                    f"{h.round_id!r} from {h.sender!r}; drop it (replayed from another round)")
        if h.recipient != SERVER_ID or h.sender not in cfg.neighbours:
            raise ProtocolViolation(f"server: expected a message from one of the round's clients to the "
                                    f"server, got one from {h.sender!r} to {h.recipient!r}; drop it")
        kind = _KIND[self.stage]
        if not isinstance(message, kind) or h.stage != self.stage or h.seq != int(self.stage):
            raise ProtocolViolation(
                f"server: expected {kind.__name__} (stage {self.stage.name}, seq {int(self.stage)}), got "
                f"{type(message).__name__} (stage {Stage(h.stage).name}, seq {h.seq}) from {h.sender!r}; the "
                "message is replayed, late or out of order: drop it")
        if h.sender in self._answered:
            raise ProtocolViolation(f"server: expected one {kind.__name__} from {h.sender!r}, got a second; "
                                    "drop it (replayed)")
        if h.sender not in self._expected:
            raise ProtocolViolation(f"server: expected {kind.__name__} only from clients still in the round, "
                                    f"got one from {h.sender!r}, who dropped out earlier; drop it")

    def _on_keys(self, message: AdvertiseKeys) -> None:
        pair = (message.cipher_public, message.mask_public)
        if any(len(k) != 32 for k in pair) or pair[0] == pair[1] or self._public & set(pair):
            raise ProtocolViolation(f"server: expected two fresh, distinct 32-byte public keys from "
                                    f"{message.header.sender!r}, got a repeated or malformed key; drop it")
        self._keys[message.header.sender] = pair
        self._public.update(pair)

    def _on_shares(self, message: ShareKeys) -> None:
        u = message.header.sender
        expected = (self.config.holders(u) & self._live[0]) - {u}
        if set(message.ciphertexts) != expected:
            raise ProtocolViolation(f"server: expected shares from {u!r} for {sorted(expected)}, got them for "
                                    f"{sorted(message.ciphertexts)}; drop it")
        if any(len(c) != SHARE_CIPHERTEXT_BYTES for c in message.ciphertexts.values()):
            raise ProtocolViolation(f"server: expected encrypted shares of {SHARE_CIPHERTEXT_BYTES} bytes "
                                    f"from {u!r}, got other lengths; drop it")
        self._ciphertexts[u] = dict(message.ciphertexts)

    def _on_masked(self, message: MaskedInput) -> None:
        vector, cfg = message.masked, self.config
        if vector.dtype != cfg.dtype() or vector.shape != (cfg.size,):
            raise ProtocolViolation(f"server: expected a masked vector of {cfg.size} x {cfg.dtype()}, got "
                                    f"{vector.shape} x {vector.dtype} from {message.header.sender!r}; drop it")
        assert self._sum is not None
        self._sum += vector  # wraps modulo 2^k: the ring's addition

    def _on_unmask(self, message: UnmaskShares) -> None:
        v, cfg = message.header.sender, self.config
        alive, dropped = self._unmask_lists(v)
        if set(message.self_mask_shares) != alive or set(message.key_shares) != dropped:
            raise ProtocolViolation(f"server: expected from {v!r} shares of b for {sorted(alive)} and of s_sk "
                                    f"for {sorted(dropped)}, got other sets; drop it")
        try:
            b = {u: share_from_bytes(s) for u, s in message.self_mask_shares.items()}
            s = {u: share_from_bytes(k) for u, k in message.key_shares.items()}
        except SecAggError as exc:
            raise ProtocolViolation(f"server: malformed share from {v!r}: {exc}; drop it") from exc
        x = cfg.abscissa(v)
        for u, value in b.items():
            self._self_mask_shares.setdefault(u, {})[x] = value
        for u, value in s.items():
            self._key_shares.setdefault(u, {})[x] = value

    def _unmask_lists(self, v: str) -> tuple[set[str], set[str]]:
        masked_with = self.config.holders(v) & self._live[1]
        return set(masked_with & self._live[2]), set(masked_with - self._live[2])

    # -- stage transitions ---------------------------------------------------------------------------------

    def close_stage(self) -> list[Message]:
        """End the current stage (its deadline passed): whoever has not answered dropped out.

        Returns
        -------
        list
            The next stage's messages to the clients (empty once the round is finished).

        Raises
        ------
        SecAggAborted
            Too few clients are left; the round ends with no output.
        """
        if self.done:
            raise SecAggError(f"close_stage: expected a running round, got one that is {self._phase.value}")
        live = frozenset(self._answered)
        self._live.append(live)
        self._check_survivors(live)
        stage = self.stage
        if stage is Stage.UNMASK:
            self._finish()
            return []
        self.stage = Stage(stage + 1)
        self._expected, self._answered = live, set()
        if stage is Stage.ADVERTISE_KEYS:
            return self._broadcast_keys(live)
        if stage is Stage.SHARE_KEYS:
            return self._relay_shares(live)
        return self._request_unmask(live)

    def _abort(self, reason: str) -> SecAggAborted:
        self._phase = _Phase.ABORTED
        self._sum = None
        self._ciphertexts.clear()
        self._self_mask_shares.clear()
        self._key_shares.clear()
        return SecAggAborted(reason)

    def _check_survivors(self, live: frozenset[str]) -> None:
        cfg = self.config
        needed = live if self.stage is not Stage.UNMASK else self._live[2]
        for u in sorted(needed):
            have = len(cfg.holders(u) & live)
            if have < cfg.threshold:
                raise self._abort(
                    f"secure aggregation aborted at stage {self.stage.name}: expected at least t = "
                    f"{cfg.threshold} live share holders for every client, got {have} for {u!r} "
                    f"({len(live)} of {len(cfg.clients)} clients answered); no output this round, retry "
                    "with more clients or a longer deadline")
        if len(live) < cfg.threshold:
            raise self._abort(f"secure aggregation aborted at stage {self.stage.name}: expected at least "
                              f"t = {cfg.threshold} clients, got {len(live)}; no output this round")

    def _header(self, stage: Stage, client: str) -> Header:
        return Header(self.config.round_id, stage, SERVER_ID, client, int(stage) - 1)

    def _broadcast_keys(self, live: frozenset[str]) -> list[Message]:
        return [KeysBroadcast(self._header(Stage.SHARE_KEYS, v),
                              {u: self._keys[u] for u in sorted(self.config.holders(v) & live)})
                for v in sorted(live)]

    def _relay_shares(self, live: frozenset[str]) -> list[Message]:
        out: list[Message] = [
            RelayedShares(self._header(Stage.MASKED_INPUT, v),
                          {u: self._ciphertexts[u][v] for u in sorted(self.config.neighbours[v] & live)})
            for v in sorted(live)]
        self._ciphertexts.clear()
        return out

    def _request_unmask(self, live: frozenset[str]) -> list[Message]:
        out: list[Message] = []
        for v in sorted(live):
            alive, dropped = self._unmask_lists(v)
            out.append(UnmaskRequest(self._header(Stage.UNMASK, v), tuple(sorted(alive)),
                                     tuple(sorted(dropped))))
        return out

    def _reconstruct(self, shares: dict[str, dict[int, int]], u: str, what: str) -> bytes:
        cfg = self.config
        got = shares.get(u, {})
        try:
            return reconstruct(got, threshold=cfg.threshold)
        except SecAggError as exc:
            raise self._abort(f"secure aggregation aborted: cannot recover {what} of {u!r} from "
                              f"{len(got)} shares ({exc}); no output this round") from exc

    def _finish(self) -> None:
        cfg = self.config
        u2, u3 = self._live[1], self._live[2]
        total = self._sum
        assert total is not None
        buffer = MaskBuffer(size=cfg.size, ring_bits=cfg.ring_bits)
        seeds = {u: self._reconstruct(self._self_mask_shares, u, "the self-mask seed b") for u in sorted(u3)}
        keys = {}
        for u in sorted(u2 - u3):
            if not cfg.neighbours[u] & u3:
                continue  # nobody in the sum masked with u
            key = KeyPair(self._reconstruct(self._key_shares, u, "the mask key s_sk"))
            if key.public_bytes != self._keys[u][1]:
                raise self._abort(f"secure aggregation aborted: the shares of {u!r}'s mask key reconstruct "
                                  "a key that does not match its advertised public key (corrupted shares)")
            keys[u] = key
        for seed in seeds.values():
            total -= buffer.mask(seed)
        for u, key in keys.items():
            for v in sorted(cfg.neighbours[u] & u3):
                seed = agree(key.private, self._keys[v][1], purpose=MASK_PURPOSE, round_id=cfg.round_id)
                # v added +PRG(s_uv) when v precedes u, else subtracted it: undo that
                if cfg.abscissa(v) < cfg.abscissa(u):
                    total -= buffer.mask(seed)
                else:
                    total += buffer.mask(seed)
        self._self_mask_shares.clear()
        self._key_shares.clear()
        self._sum = None
        self._phase = _Phase.FINISHED
        self.result = SecAggResult(
            ring_sum=total, survivors=tuple(c for c in cfg.clients if c in u3),
            dropped=tuple(c for c in cfg.clients if c not in u3), clip=cfg.clip, ring_bits=cfg.ring_bits,
            max_clients=len(cfg.clients))
