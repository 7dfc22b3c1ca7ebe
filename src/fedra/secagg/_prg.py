"""Masks from a cryptographic pseudorandom generator: a 32-byte seed becomes a vector in Z_{2^k}.

Bonawitz et al. (2017), Section 4 ("PRG"): every mask is PRG(seed) expanded to the input's length, so two
clients who agreed on a seed produce the same mask, and a mask reveals nothing without its seed. fedra's PRG
is the AES-256-CTR keystream (from ``cryptography``, which uses AES-NI where the CPU has it) under the seed
as the key and a zero initial counter, read as little-endian unsigned integers: uniform on Z_{2^32} or
Z_{2^64}. numpy's generators are never used for masks: they are not cryptographic, and their streams may
change between numpy versions.

Each seed is used for exactly one mask (the self-mask seed is fresh per round; a pairwise seed is derived
with the round id in HKDF's ``info``), so the fixed counter never repeats a keystream under one key.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedra.secagg._errors import SecAggError

__all__ = ["RING_DTYPES", "MaskBuffer", "prg_mask", "ring_dtype"]

#: Ring width in bits -> the unsigned dtype whose wrap-around arithmetic is arithmetic in Z_{2^bits}.
RING_DTYPES: dict[int, np.dtype[np.unsignedinteger]] = {
    32: np.dtype("<u4"),
    64: np.dtype("<u8"),
}

_ZERO_COUNTER = bytes(16)


def ring_dtype(ring_bits: int) -> np.dtype[np.unsignedinteger]:
    """The unsigned dtype for Z_{2^ring_bits}; 32 and 64 are supported."""
    try:
        return RING_DTYPES[ring_bits]
    except KeyError:
        raise SecAggError(f"ring_bits: expected one of {sorted(RING_DTYPES)}, got {ring_bits!r}") from None


def _keystream_into(seed: bytes, zeros: bytes, out: bytearray) -> None:
    """Write the AES-256-CTR keystream of ``len(zeros)`` bytes under ``seed`` into ``out``."""
    if len(seed) != 32:
        raise SecAggError(f"PRG seed: expected 32 bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
    encryptor.update_into(zeros, out)


def prg_mask(seed: bytes, *, size: int, ring_bits: int = 32) -> np.ndarray:
    """The mask ``PRG(seed)``: ``size`` uniform elements of Z_{2^ring_bits}.

    Parameters
    ----------
    seed
        32 bytes, used as the AES-256 key.
    size
        Number of elements.
    ring_bits
        32 or 64.

    Returns
    -------
    numpy.ndarray
        A fresh, writable 1-d array of dtype ``uint32`` or ``uint64``.
    """
    return MaskBuffer(size=size, ring_bits=ring_bits).mask(seed).copy()


class MaskBuffer:
    """Reusable memory for many masks of one size: :meth:`mask` returns a view that the next call overwrites.

    Fresh buffers cost a page fault per 4 KiB, which is most of the time of expanding a seed (AES-CTR
    itself runs at several GB/s), so the client and the server each expand all their masks into one.
    """

    def __init__(self, *, size: int, ring_bits: int = 32) -> None:
        self.dtype = ring_dtype(ring_bits)
        if size < 0:
            raise SecAggError(f"mask size: expected a non-negative integer, got {size}")
        self.size = size
        nbytes = size * self.dtype.itemsize
        self._zeros = bytes(nbytes)
        self._out = bytearray(nbytes + 15)  # update_into wants room for one block beyond the data

    def mask(self, seed: bytes) -> np.ndarray:
        """``PRG(seed)`` as a read-only view into this buffer, valid until the next call."""
        _keystream_into(seed, self._zeros, self._out)
        view = np.frombuffer(self._out, dtype=self.dtype, count=self.size)
        view.flags.writeable = False
        return view
