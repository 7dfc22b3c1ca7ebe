"""The client side of SecAgg+ as a sans-I/O state machine: messages in, messages out.

Bonawitz et al. (2017), Figure 4 (the client's rounds 0-4, without the signatures of the active model:
client and server authenticate each other through the transport's mutual TLS), restricted to the
client's neighbourhood as in Bell et al. (2020), Algorithm 2. The caller moves the messages: it sends what
:meth:`ClientProtocol.start` returns, then feeds every message from the server to
:meth:`ClientProtocol.receive` and sends back what that returns. No sockets, no threads, no clocks.

A message that does not fit the current stage (another round, another recipient, a past or future stage, a
repeated sequence number) is refused with :class:`~fedra.secagg.ProtocolViolation` and changes nothing:
the genuine message may still come. An instruction from the server that a correct server never sends
(a client named both alive and dropped, fewer than t holders, duplicated public keys, a share that fails
to authenticate) is also refused, and the client stops for good: continuing could reveal its update.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from typing import final

import numpy as np

from fedra.secagg._config import SecAggConfig
from fedra.secagg._crypto import KeyPair, agree, decrypt_share, encrypt_share
from fedra.secagg._errors import ProtocolViolation, SecAggError
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
from fedra.secagg._quant import add_ring_noise, quantize
from fedra.secagg._shamir import SHARE_BYTES, share, share_from_bytes, share_to_bytes

__all__ = ["ClientProtocol"]

MASK_PURPOSE = b"mask"
SHARE_PURPOSE = b"share"


class _State(Enum):
    NEW = "new"
    ADVERTISED = "waiting for the neighbours' keys"
    SHARED = "waiting for the relayed shares"
    MASKED = "waiting for the unmask request"
    DONE = "done"
    FAILED = "refused to continue"


_EXPECTED: dict[_State, tuple[type, Stage, int]] = {
    _State.ADVERTISED: (KeysBroadcast, Stage.SHARE_KEYS, 0),
    _State.SHARED: (RelayedShares, Stage.MASKED_INPUT, 1),
    _State.MASKED: (UnmaskRequest, Stage.UNMASK, 2),
}


@final
class ClientProtocol:
    """One client's side of one round of SecAgg+.

    Parameters
    ----------
    config
        The round's public parameters, the same as the server's.
    client_id
        This client, one of ``config.clients``.
    update
        The client's float update, ``config.size`` values (any shape); clipped and quantized here.
    rng
        ``None`` rounds to nearest when quantizing; a generator rounds stochastically.
    random_bytes
        The source of key material and seeds; ``os.urandom`` unless a test needs reproducibility.
    noise_stddev, noise_rng
        Distributed DP: Gaussian noise of this standard deviation (in the update's units), drawn from
        ``noise_rng``, is added to the quantized update in the ring (:func:`~fedra.secagg.add_ring_noise`),
        so the unmasked sum carries the sum of the clients' shares and the server never sees it without.

    Examples
    --------
    ``outgoing = client.start()``, then for every message from the server
    ``outgoing = client.receive(message)``, until :attr:`done`.
    """

    def __init__(self, config: SecAggConfig, client_id: str, update: np.ndarray, *,
                 rng: np.random.Generator | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom, noise_stddev: float = 0.0,
                 noise_rng: np.random.Generator | None = None) -> None:
        if client_id not in config.neighbours:
            raise SecAggError(f"client_id: expected one of the round's clients, got {client_id!r}")
        if np.size(update) != config.size:
            raise SecAggError(f"update: expected {config.size} values, got {np.size(update)}")
        self.config = config
        self.client_id = client_id
        quantized = quantize(update, clip=config.clip, ring_bits=config.ring_bits,
                             max_clients=len(config.clients), rng=rng)
        if noise_stddev:
            if noise_rng is None:
                raise SecAggError("noise_stddev: expected a noise_rng to draw the noise from, got None")
            quantized = add_ring_noise(quantized, stddev=noise_stddev, clip=config.clip,
                                       ring_bits=config.ring_bits, max_clients=len(config.clients),
                                       rng=noise_rng)
        self._quantized: np.ndarray | None = quantized
        self._random_bytes = random_bytes
        self._cipher = KeyPair.generate(random_bytes)
        self._mask = KeyPair.generate(random_bytes)
        self._state = _State.NEW
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._own_shares: tuple[int, int] = (0, 0)
        self._key_shares: dict[str, int] = {}
        self._self_mask_shares: dict[str, int] = {}
        self._masked_with: frozenset[str] = frozenset()
        self._self_mask_seed = b""
        #: the AES keys agreed with each holder in stage 1, to decrypt its shares in stage 2 (one X25519
        #: agreement per neighbour instead of two); dropped once the shares are read
        self._share_keys: dict[str, bytes] = {}

    @property
    def done(self) -> bool:
        """Whether the client has sent its last message."""
        return self._state is _State.DONE

    @property
    def failed(self) -> bool:
        """Whether the client refused an instruction and stopped."""
        return self._state is _State.FAILED

    def _header(self, stage: Stage) -> Header:
        return Header(self.config.round_id, stage, self.client_id, SERVER_ID, int(stage))

    def start(self) -> list[Message]:
        """Stage 0: advertise the two public keys."""
        if self._state is not _State.NEW:
            raise ProtocolViolation(f"start: expected a new client, got one that is {self._state.value}")
        self._state = _State.ADVERTISED
        return [AdvertiseKeys(self._header(Stage.ADVERTISE_KEYS), self._cipher.public_bytes,
                              self._mask.public_bytes)]

    def receive(self, message: Message) -> list[Message]:
        """Take one message from the server and return the messages to send back.

        Raises
        ------
        ProtocolViolation
            The message does not belong here (the state is unchanged), or it is an instruction that no
            correct server sends (the client stops: :attr:`failed`).
        """
        self._check_header(message)
        try:
            if isinstance(message, KeysBroadcast):
                return self._on_keys(message)
            if isinstance(message, RelayedShares):
                return self._on_shares(message)
            assert isinstance(message, UnmaskRequest)
            return self._on_unmask(message)
        except SecAggError:
            self._fail()
            raise

    def _fail(self) -> None:
        self._state = _State.FAILED
        self._share_keys.clear()
        self._quantized = None
        self._self_mask_seed = b""
        self._key_shares.clear()
        self._self_mask_shares.clear()

    def _check_header(self, message: Message) -> None:
        h = message.header
        me = self.client_id
        if h.round_id != self.config.round_id:
            raise ProtocolViolation(f"client {me!r}: expected a message of round {self.config.round_id!r}, "
                                    f"got one of round {h.round_id!r}; drop it (replayed from another round)")
        if h.recipient != me or h.sender != SERVER_ID:
            raise ProtocolViolation(f"client {me!r}: expected a message from the server to {me!r}, got one "
                                    f"from {h.sender!r} to {h.recipient!r}; drop it (misdirected)")
        expected = _EXPECTED.get(self._state)
        if expected is None:
            raise ProtocolViolation(f"client {me!r}: expected no message (the client is "
                                    f"{self._state.value}), got {type(message).__name__}; drop it "
                                    "(replayed or late)")
        kind, stage, seq = expected
        if not isinstance(message, kind) or h.stage != stage or h.seq != seq:
            raise ProtocolViolation(
                f"client {me!r}: expected {kind.__name__} (stage {stage.name}, seq {seq}), got "
                f"{type(message).__name__} (stage {Stage(h.stage).name}, seq {h.seq}); the message is "
                "replayed or out of order: drop it")

    # -- stage 1: share keys -------------------------------------------------------------------------------

    def _on_keys(self, message: KeysBroadcast) -> list[Message]:
        cfg, me = self.config, self.client_id
        keys = dict(message.keys)
        holders = cfg.holders(me)
        strangers = sorted(set(keys) - holders)
        if strangers:
            raise ProtocolViolation(f"client {me!r}: expected keys of its holders only, got keys of "
                                    f"{strangers}, who are not its neighbours")
        if keys.get(me) != (self._cipher.public_bytes, self._mask.public_bytes):
            raise ProtocolViolation(f"client {me!r}: expected its own public keys in the broadcast, got "
                                    "other keys or none; the server is faulty")
        if len(keys) < cfg.threshold:
            raise ProtocolViolation(f"client {me!r}: expected at least t = {cfg.threshold} live holders "
                                    f"(neighbours and itself), got {len(keys)}; refusing to share secrets")
        public = [k for pair in keys.values() for k in pair]
        if len(set(public)) != len(public):
            raise ProtocolViolation(f"client {me!r}: expected distinct public keys, got duplicates; a client "
                                    "copied another's key, refusing to continue")
        self._keys = keys
        seed = self._self_mask_seed = self._random_bytes(32)
        xs = [cfg.abscissa(v) for v in keys]
        key_shares = share(self._mask.private_bytes, xs=xs, threshold=cfg.threshold,
                           random_bytes=self._random_bytes)
        seed_shares = share(seed, xs=xs, threshold=cfg.threshold, random_bytes=self._random_bytes)
        ciphertexts = {}
        for v, (cipher_public, _) in keys.items():
            x = cfg.abscissa(v)
            if v == me:
                self._own_shares = (key_shares[x], seed_shares[x])
                continue
            key = self._share_keys[v] = agree(self._cipher.private, cipher_public, purpose=SHARE_PURPOSE,
                                              round_id=cfg.round_id)
            aad = Header(cfg.round_id, Stage.SHARE_KEYS, me, v, 0).associated_data()
            plaintext = share_to_bytes(key_shares[x]) + share_to_bytes(seed_shares[x])
            ciphertexts[v] = encrypt_share(key, plaintext, associated=aad, random_bytes=self._random_bytes)
        self._state = _State.SHARED
        return [ShareKeys(self._header(Stage.SHARE_KEYS), ciphertexts)]

    # -- stage 2: masked input -----------------------------------------------------------------------------

    def _on_shares(self, message: RelayedShares) -> list[Message]:
        cfg, me = self.config, self.client_id
        senders = set(message.ciphertexts)
        unknown = sorted(senders - (set(self._keys) - {me}))
        if unknown:
            raise ProtocolViolation(f"client {me!r}: expected shares from holders whose keys it received, "
                                    f"got shares from {unknown}")
        if len(senders) + 1 < cfg.threshold:
            raise ProtocolViolation(f"client {me!r}: expected shares from at least t - 1 = "
                                    f"{cfg.threshold - 1} neighbours, got {len(senders)}; refusing to mask")
        for u, ciphertext in message.ciphertexts.items():
            key = self._share_keys[u]  # the same key both ways: X25519(c_me, c_u) = X25519(c_u, c_me)
            aad = Header(cfg.round_id, Stage.SHARE_KEYS, u, me, 0).associated_data()
            plaintext = decrypt_share(key, ciphertext, associated=aad)
            if len(plaintext) != 2 * SHARE_BYTES:
                raise ProtocolViolation(f"client {me!r}: expected two shares from {u!r}, got "
                                        f"{len(plaintext)} bytes")
            self._key_shares[u] = share_from_bytes(plaintext[:SHARE_BYTES])
            self._self_mask_shares[u] = share_from_bytes(plaintext[SHARE_BYTES:])
        self._key_shares[me], self._self_mask_shares[me] = self._own_shares
        self._share_keys.clear()
        self._masked_with = frozenset(senders)
        assert self._quantized is not None
        masked = self._quantized.copy()
        self._quantized = None
        buffer = MaskBuffer(size=cfg.size, ring_bits=cfg.ring_bits)
        masked += buffer.mask(self._self_mask_seed)
        mine = cfg.abscissa(me)
        for v in sorted(senders):
            seed = agree(self._mask.private, self._keys[v][1], purpose=MASK_PURPOSE, round_id=cfg.round_id)
            if mine < cfg.abscissa(v):
                masked += buffer.mask(seed)
            else:
                masked -= buffer.mask(seed)
        self._self_mask_seed = b""
        self._state = _State.MASKED
        return [MaskedInput(self._header(Stage.MASKED_INPUT), masked)]

    # -- stage 3: unmasking --------------------------------------------------------------------------------

    def _on_unmask(self, message: UnmaskRequest) -> list[Message]:
        cfg, me = self.config, self.client_id
        alive, dropped = set(message.alive), set(message.dropped)
        if len(alive) != len(message.alive) or len(dropped) != len(message.dropped):
            raise ProtocolViolation(f"client {me!r}: expected each client named once, got repetitions")
        both = sorted(alive & dropped)
        if both:
            raise ProtocolViolation(f"client {me!r}: expected disjoint alive and dropped lists, got {both} "
                                    "named in both; revealing both secrets would unmask them, refusing")
        expected = self._masked_with | {me}
        if alive | dropped != expected or me not in alive:
            raise ProtocolViolation(
                f"client {me!r}: expected alive + dropped = the clients it masked with "
                f"{sorted(expected)}, itself alive; got alive {sorted(alive)}, dropped {sorted(dropped)}")
        if len(alive) < cfg.threshold:
            raise ProtocolViolation(f"client {me!r}: expected at least t = {cfg.threshold} surviving "
                                    f"holders, got {len(alive)}; refusing to unmask so few")
        reply = UnmaskShares(
            self._header(Stage.UNMASK),
            {u: share_to_bytes(self._self_mask_shares[u]) for u in sorted(alive)},
            {u: share_to_bytes(self._key_shares[u]) for u in sorted(dropped)})
        self._key_shares.clear()
        self._self_mask_shares.clear()
        self._state = _State.DONE
        return [reply]
