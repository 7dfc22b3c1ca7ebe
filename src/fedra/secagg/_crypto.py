"""Key agreement, key derivation and authenticated encryption for SecAgg, all from ``cryptography``.

Bonawitz et al. (2017), Section 4: every client holds two Diffie-Hellman key pairs, ``c`` to encrypt the
shares it sends through the server to its neighbours and ``s`` to agree on pairwise mask seeds. fedra uses
X25519 for both, HKDF-SHA256 to turn a shared secret into a key (the round id and the purpose go in
``info``, so no key is ever reused across rounds or purposes), and AES-256-GCM for the shares, with the
round, the stage, the sender and the recipient as associated data: a ciphertext moved to another round,
another pair of clients or another stage fails to decrypt.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedra.secagg._errors import ProtocolViolation

__all__ = ["SHARE_CIPHERTEXT_BYTES", "KeyPair", "agree", "decrypt_share", "encrypt_share", "public_bytes"]

_NONCE = 12
_TAG = 16
KEY_BYTES = 32
#: Length of one encrypted pair of shares: nonce, two 33-byte shares, GCM tag.
SHARE_CIPHERTEXT_BYTES = _NONCE + 2 * 33 + _TAG


class KeyPair:
    """An X25519 key pair whose private key is 32 raw bytes (so it can be Shamir-shared)."""

    def __init__(self, private: bytes) -> None:
        self.private_bytes = private
        self.private = X25519PrivateKey.from_private_bytes(private)
        self.public_bytes = public_bytes(self.private)

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> KeyPair:
        """A fresh key pair from ``random_bytes(32)``."""
        return cls(random_bytes(KEY_BYTES))


def public_bytes(private: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``private``."""
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def agree(private: X25519PrivateKey, peer_public: bytes, *, purpose: bytes, round_id: str) -> bytes:
    """A 32-byte key shared with the owner of ``peer_public``: HKDF-SHA256 of the X25519 secret.

    Both sides get the same key; ``purpose`` and ``round_id`` separate the keys of different uses.
    """
    if len(peer_public) != KEY_BYTES:
        raise ProtocolViolation(f"public key: expected {KEY_BYTES} bytes, got {len(peer_public)}")
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # a low-order point gives the all-zero secret, which cryptography refuses
        raise ProtocolViolation(f"public key: not a usable X25519 key ({exc}); the peer is faulty") from exc
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"fedra-secagg/" + purpose + b"/" + round_id.encode())
    return hkdf.derive(secret)


def encrypt_share(key: bytes, plaintext: bytes, *, associated: bytes,
                  random_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """AES-256-GCM of ``plaintext``: a random 12-byte nonce followed by the ciphertext and tag."""
    nonce = random_bytes(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt_share(key: bytes, ciphertext: bytes, *, associated: bytes) -> bytes:
    """Inverse of :func:`encrypt_share`; a forged, altered or misdirected ciphertext is refused."""
    try:
        return AESGCM(key).decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:], associated)
    except (InvalidTag, ValueError) as exc:
        raise ProtocolViolation(
            "encrypted share: expected a ciphertext this client can authenticate, got one that fails "
            "(altered, replayed from another round, or meant for another client); treat the sender "
            "or the server relaying it as faulty") from exc
