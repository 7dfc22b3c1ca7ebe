"""Shamir t-of-n secret sharing over the prime field GF(p), p = 2^256 + 297.

Shamir (1979), "How to share a secret", as used by Bonawitz et al. (2017), "Practical Secure Aggregation
for Privacy-Preserving Machine Learning" (CCS), Section 3: a secret s becomes the constant term of a random
polynomial f of degree t-1 over GF(p); holder j gets the share (x_j, f(x_j)). Any t shares give s back by
Lagrange interpolation at 0; t-1 shares are consistent with every secret, so they reveal nothing.

The secrets fedra shares are 32-byte strings (an X25519 private key, a self-mask seed), read as big-endian
integers below 2^256, so the field is the smallest prime above 2^256. Pure functions of Python integers;
the coefficients come from an injected source of random bytes (``os.urandom`` by default).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from fedra.secagg._errors import SecAggError

__all__ = ["PRIME", "SECRET_BYTES", "SHARE_BYTES", "reconstruct", "share", "share_from_bytes",
           "share_to_bytes"]

#: The field's modulus: the smallest prime above 2^256, so any 32-byte secret is a field element.
PRIME = 2**256 + 297
#: Length of a secret in bytes.
SECRET_BYTES = 32
#: Length of one share's value on the wire (big-endian; values reach up to PRIME - 1 > 2^256).
SHARE_BYTES = 33

RandomBytes = Callable[[int], bytes]


def _random_element(random_bytes: RandomBytes) -> int:
    """A uniform element of GF(PRIME), by rejection sampling 33-byte strings."""
    while True:
        value = int.from_bytes(random_bytes(SHARE_BYTES), "big") >> 7  # 257 bits
        if value < PRIME:
            return value


def share(secret: bytes, *, xs: Iterable[int], threshold: int,
          random_bytes: RandomBytes = os.urandom) -> dict[int, int]:
    """Split ``secret`` into one share per abscissa in ``xs``; any ``threshold`` of them recover it.

    Parameters
    ----------
    secret
        Exactly :data:`SECRET_BYTES` bytes.
    xs
        Distinct abscissas in ``[1, PRIME)``, one per holder (fedra uses a client's index + 1).
    threshold
        t: the number of shares needed (the polynomial has degree t - 1); at most ``len(xs)``.
    random_bytes
        Source of the polynomial's random coefficients.

    Returns
    -------
    dict[int, int]
        ``{x: f(x)}`` for every ``x`` in ``xs``.
    """
    xs = list(xs)
    if len(secret) != SECRET_BYTES:
        raise SecAggError(f"secret: expected {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError(f"share abscissas: expected distinct integers in [1, p), got {sorted(xs)}")
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"threshold: expected 1 <= t <= {len(xs)} holders, got {threshold}")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [_random_element(random_bytes) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        value = 0
        for c in reversed(coefficients):  # Horner
            value = (value * x + c) % PRIME
        shares[x] = value
    return shares


def _inverses(values: list[int]) -> list[int]:
    """Modular inverses of nonzero field elements with one exponentiation (Montgomery's trick)."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out


def _barycentric_weights(xs: list[int]) -> list[int]:
    """w_i = 1 / prod_{j != i} (x_i - x_j): the at-independent part of the Lagrange basis."""
    dens = []
    for i, xi in enumerate(xs):
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                den = den * (xi - xj) % PRIME
        dens.append(den)
    return _inverses(dens)


def _evaluate(xs: list[int], ys: list[int], weights: list[int], at: int) -> int:
    """Value at ``at`` of the polynomial through ``(xs, ys)``: sum_i y_i w_i prod_{j != i} (at - x_j)."""
    diffs = [(at - x) % PRIME for x in xs]
    suffix = [1] * (len(xs) + 1)
    for i in range(len(xs) - 1, -1, -1):
        suffix[i] = suffix[i + 1] * diffs[i] % PRIME
    total, prefix = 0, 1
    for i in range(len(xs)):
        total = (total + ys[i] * weights[i] % PRIME * prefix % PRIME * suffix[i + 1]) % PRIME
        prefix = prefix * diffs[i] % PRIME
    return total


def _interpolate(points: list[tuple[int, int]], at: int) -> int:
    """Value at ``at`` of the unique polynomial of degree < len(points) through ``points``."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return _evaluate(xs, ys, _barycentric_weights(xs), at)


def reconstruct(shares: Mapping[int, int], *, threshold: int) -> bytes:
    """The secret behind at least ``threshold`` shares, by Lagrange interpolation at 0.

    The first ``threshold`` shares (by abscissa) determine the polynomial; every further share must lie
    on it, so a corrupted share among more than t is detected rather than silently giving a wrong secret.

    Raises
    ------
    SecAggError
        Fewer than ``threshold`` shares, shares that disagree, or a secret that is not 32 bytes long.
    """
    if len(shares) < threshold or threshold < 1:
        raise SecAggError(f"reconstruct: expected at least t = {threshold} shares, got {len(shares)}; "
                          "fewer than t shares determine nothing about the secret")
    points = sorted((x % PRIME, y % PRIME) for x, y in shares.items())
    basis, extra = points[:threshold], points[threshold:]
    xs, ys = [x for x, _ in basis], [y for _, y in basis]
    if len(set(xs)) != len(xs) or 0 in xs:
        raise SecAggError("reconstruct: expected shares at distinct nonzero abscissas")
    weights = _barycentric_weights(xs)
    for x, y in extra:
        if _evaluate(xs, ys, weights, x) != y:
            raise SecAggError(f"reconstruct: the share at x = {x} is inconsistent with the others; "
                              "a holder sent a corrupted share")
    secret = _evaluate(xs, ys, weights, 0)
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise SecAggError("reconstruct: the shares do not encode a 32-byte secret (corrupted shares)")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(value: int) -> bytes:
    """One share's value as :data:`SHARE_BYTES` big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Inverse of :func:`share_to_bytes`, refusing anything that is not a field element."""
    if len(data) != SHARE_BYTES:
        raise SecAggError(f"share: expected {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise SecAggError("share: expected a value below the field's prime, got a larger one")
    return value
