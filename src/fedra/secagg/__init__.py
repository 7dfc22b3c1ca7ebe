"""Secure aggregation: SecAgg+ (Bell et al. 2020) on top of SecAgg (Bonawitz et al. 2017).

The server learns the sum of the clients' quantized updates and nothing else: each client adds to its
update a self-mask PRG(b) and, for each of its O(log n) neighbours, a pairwise mask +-PRG(s_uv) that the
neighbour adds with the opposite sign. Pairwise masks cancel in the sum; the server removes the self-masks
of the survivors, and the pairwise masks of clients that dropped out, from Shamir shares that the
survivors reveal, each holder revealing one secret per peer and never both.

Cryptographic pieces are pure functions; the protocol is two sans-I/O state machines (messages in,
messages out), moved by a driver: :func:`run_secagg_round` in process, the round driver over gRPC alike.

Stages::

    ADVERTISE_KEYS  clients send two X25519 public keys (c for encryption, s for masks)
    SHARE_KEYS      clients get their live neighbours' keys, send Shamir shares of s_sk and b to each,
                    encrypted with AES-GCM under HKDF(X25519(c_u, c_v))
    MASKED_INPUT    clients get their shares and send y = x + PRG(b) + sum_v +-PRG(s_uv) mod 2^k
    UNMASK          clients get who survived and who dropped, and send shares of b for the survivors and
                    of s_sk for the dropped; the server reconstructs, unmasks and outputs the sum

Contents:

- Protocol: :class:`SecAggConfig`, :class:`ClientProtocol`, :class:`ServerProtocol`, :class:`SecAggResult`,
  :func:`run_secagg_round` (with :class:`SeededRandomBytes` for reproducible simulations).
- Messages: :class:`Stage`, :class:`Header`, :class:`AdvertiseKeys`, :class:`KeysBroadcast`,
  :class:`ShareKeys`, :class:`RelayedShares`, :class:`MaskedInput`, :class:`UnmaskRequest`,
  :class:`UnmaskShares`, :func:`encode_message`, :func:`decode_message`, :data:`SERVER_ID`.
- Pieces: Shamir sharing (:func:`share`, :func:`reconstruct`, :data:`PRIME`), the PRG (:func:`prg_mask`,
  :class:`MaskBuffer`), quantization (:func:`quantize`, :func:`dequantize_sum`,
  :func:`quantization_levels`, and for distributed DP :func:`add_ring_noise`, :func:`rounding_sensitivity`),
  the graph (:func:`neighbourhoods`, :func:`default_parameters`,
  :func:`check_parameters`).
- Errors: :class:`SecAggError` (a :class:`~fedra.errors.FedraError`), :class:`SecAggAborted`,
  :class:`ProtocolViolation`.

Security model: semi-honest server and clients, with authenticated client-server channels (mutual TLS);
the server cannot learn an individual update even if it lies about who dropped out, since a client
refuses to reveal both secrets of a peer. Not covered: Bonawitz et al.'s active-model signatures and
consistency round against a malicious server that equivocates between clients.
"""

from fedra.secagg._client import ClientProtocol
from fedra.secagg._config import SecAggConfig, SecAggResult
from fedra.secagg._errors import ProtocolViolation, SecAggAborted, SecAggError
from fedra.secagg._graph import check_parameters, default_parameters, neighbourhoods
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
    decode_message,
    encode_message,
)
from fedra.secagg._prg import MaskBuffer, prg_mask
from fedra.secagg._quant import (
    add_ring_noise,
    dequantize_sum,
    quantization_levels,
    quantize,
    rounding_sensitivity,
)
from fedra.secagg._runner import SeededRandomBytes, run_secagg_round
from fedra.secagg._server import ServerProtocol
from fedra.secagg._shamir import PRIME, reconstruct, share

__all__ = [
    "PRIME",
    "SERVER_ID",
    "AdvertiseKeys",
    "ClientProtocol",
    "Header",
    "KeysBroadcast",
    "MaskBuffer",
    "MaskedInput",
    "Message",
    "ProtocolViolation",
    "RelayedShares",
    "SecAggAborted",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "SeededRandomBytes",
    "ServerProtocol",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "UnmaskShares",
    "add_ring_noise",
    "check_parameters",
    "decode_message",
    "default_parameters",
    "dequantize_sum",
    "encode_message",
    "neighbourhoods",
    "prg_mask",
    "quantization_levels",
    "quantize",
    "reconstruct",
    "rounding_sensitivity",
    "run_secagg_round",
    "share",
]
