"""Fixed-point quantization of float updates into the ring Z_{2^k}, and back for the sum.

Secure aggregation sums integers modulo 2^k (Bonawitz et al. 2017, Section 3: inputs are vectors in
Z_R). A float update is clipped to ``[-clip, clip]`` and scaled to an integer in ``[-L, L]``, stored in
two's complement (``v mod 2^k``). With ``L = floor((2^(k-1) - 1) / max_clients)`` the sum of up to
``max_clients`` such integers lies in ``[-(2^(k-1) - 1), 2^(k-1) - 1]``, so reading the ring sum as a
signed k-bit integer gives the exact integer sum: no overflow, whatever the inputs. The price is
resolution: the step is ``clip / L`` (about ``clip * max_clients / 2^31`` for k = 32).

Rounding is to nearest by default; stochastic rounding (``floor(y + u)``, ``u ~ U[0, 1)``, unbiased, as
in Bell et al. 2020 and the distributed DP literature) takes an injected :class:`numpy.random.Generator`.
Rounding randomness needs no secrecy, so numpy's generator is fine here (masks never use it).
"""

from __future__ import annotations

import numpy as np

from fedra.secagg._errors import SecAggError
from fedra.secagg._prg import ring_dtype

__all__ = ["add_ring_noise", "dequantize_sum", "quantization_levels", "quantize", "rounding_sensitivity"]

_SIGNED: dict[int, np.dtype[np.signedinteger]] = {32: np.dtype("<i4"), 64: np.dtype("<i8")}


def quantization_levels(*, ring_bits: int, max_clients: int) -> int:
    """L: the largest magnitude of one quantized value so that ``max_clients`` values never overflow."""
    ring_dtype(ring_bits)
    if max_clients < 1:
        raise SecAggError(f"max_clients: expected at least 1, got {max_clients}")
    levels = int((2 ** (ring_bits - 1) - 1) // max_clients)
    if levels < 1:
        raise SecAggError(f"quantization: {max_clients} clients leave no levels in a {ring_bits}-bit ring; "
                          "use ring_bits=64")
    return levels


def _check_clip(clip: float) -> float:
    clip = float(clip)
    if not np.isfinite(clip) or clip <= 0:
        raise SecAggError(f"clip: expected a finite positive number, got {clip!r}")
    return clip


def quantize(x: np.ndarray, *, clip: float, ring_bits: int = 32, max_clients: int,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """``x`` clipped to ``[-clip, clip]``, scaled to integers in ``[-L, L]``, as elements of Z_{2^k}.

    Parameters
    ----------
    x
        A float array (any shape; flattened).
    clip
        Values beyond ``+-clip`` are clipped first (explicitly: the bound is part of the protocol's
        configuration, not inferred from the data).
    ring_bits
        k: 32 or 64.
    max_clients
        The most clients whose values will ever be summed.
    rng
        ``None`` rounds to nearest; a generator rounds stochastically (unbiased).

    Returns
    -------
    numpy.ndarray
        1-d ``uint32``/``uint64``; entry ``v`` stands for the signed integer ``v`` read as two's complement.
    """
    clip = _check_clip(clip)
    levels = quantization_levels(ring_bits=ring_bits, max_clients=max_clients)
    values = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise SecAggError("quantize: expected finite values, got NaN or Inf; clipping cannot bound them")
    scaled = np.clip(values, -clip, clip) * (levels / clip)
    scaled = np.rint(scaled) if rng is None else np.floor(scaled + rng.random(scaled.shape))
    limit = float(levels)
    if int(limit) > levels:  # 64-bit rings: L may round up to a float above it
        limit = float(np.nextafter(limit, 0.0))
    np.clip(scaled, -limit, limit, out=scaled)  # float error at the edges must not exceed L
    out: np.ndarray = scaled.astype(_SIGNED[ring_bits]).view(ring_dtype(ring_bits))
    return out


def dequantize_sum(total: np.ndarray, *, clip: float, ring_bits: int = 32, max_clients: int) -> np.ndarray:
    """The float sum that the ring element ``total`` (a sum of :func:`quantize` outputs) stands for."""
    clip = _check_clip(clip)
    levels = quantization_levels(ring_bits=ring_bits, max_clients=max_clients)
    total = np.asarray(total)
    if total.dtype != ring_dtype(ring_bits):
        raise SecAggError(f"dequantize: expected dtype {ring_dtype(ring_bits)}, got {total.dtype}")
    out: np.ndarray = total.view(_SIGNED[ring_bits]).astype(np.float64) * (clip / levels)
    return out


def add_ring_noise(q: np.ndarray, *, stddev: float, clip: float, ring_bits: int = 32, max_clients: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``q`` (a :func:`quantize` output) plus Gaussian noise of ``stddev`` (in the update's units), rounded
    to whole levels and added in the ring (distributed DP: each client's share of the noise).

    Noise is added after quantization, in integers: the sum the server unmasks is then the exact integer
    sum of the quantized updates plus the sum of the noise shares, so the Gaussian mechanism's analysis
    applies to a deterministic function of the data (whose L2 sensitivity grows by rounding, at most
    ``sqrt(d) / 2`` levels: :func:`rounding_sensitivity`). A share that pushes the sum past the ring's
    signed range wraps it: a loss of accuracy on that coordinate, never of privacy (the wrap is applied
    to the noised sum).
    """
    clip = _check_clip(clip)
    levels = quantization_levels(ring_bits=ring_bits, max_clients=max_clients)
    if not np.isfinite(stddev) or stddev < 0:
        raise SecAggError(f"noise stddev: expected a finite number >= 0, got {stddev!r}")
    dtype = ring_dtype(ring_bits)
    if q.dtype != dtype:
        raise SecAggError(f"add_ring_noise: expected dtype {dtype}, got {q.dtype}")
    if stddev == 0:
        return q
    noise = np.rint(rng.normal(0.0, stddev * (levels / clip), q.shape)).astype(np.int64)
    out: np.ndarray = (q.astype(np.uint64) + noise.view(np.uint64)).astype(dtype)  # both wrap mod 2^k
    return out


def rounding_sensitivity(*, size: int, clip_norm: float, clip: float, ring_bits: int = 32,
                         max_clients: int) -> float:
    """How much rounding to nearest can grow the L2 norm of a quantized update whose float norm is at
    most ``clip_norm``, as a factor: ``(s * clip_norm + sqrt(size) / 2) / (s * clip_norm)``, with ``s`` the
    levels per unit. The noise must be measured against this grown sensitivity."""
    levels = quantization_levels(ring_bits=ring_bits, max_clients=max_clients)
    scaled = clip_norm * levels / _check_clip(clip)
    return float((scaled + np.sqrt(size) / 2) / scaled)
