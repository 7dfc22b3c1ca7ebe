"""The configuration every party of a secure aggregation round agrees on, and the round's result.

The driver sends the same :class:`SecAggConfig` to the server state machine and to every client (it is
part of the round's task): the round id, the clients in a fixed order (client ``i`` holds Shamir
abscissa ``i + 1``), the vector length, the clipping bound and ring width, the graph's degree and seed,
and the threshold. Nothing in it is secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, final

import numpy as np

from fedra.secagg._errors import SecAggError
from fedra.secagg._graph import check_parameters, default_parameters, neighbourhoods
from fedra.secagg._prg import ring_dtype
from fedra.secagg._quant import dequantize_sum, quantization_levels

__all__ = ["SecAggConfig", "SecAggResult"]


@final
@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one round of SecAgg+ (Bell et al. 2020 over Bonawitz et al. 2017).

    Parameters
    ----------
    round_id
        Unique per round; bound into every key derivation and every message header.
    clients
        The round's client ids, distinct and non-empty, in the order that fixes their Shamir abscissas.
    size
        Length of every client's (flattened) update.
    clip
        Each coordinate is clipped to ``[-clip, clip]`` before quantization.
    degree
        k, each client's number of neighbours: ``len(clients) - 1`` (complete graph, Bonawitz et al.) or an
        even number (Harary graph, Bell et al.).
    threshold
        t, the Shamir threshold among a client's k + 1 holders; a strict majority of them.
    graph_seed
        32 public random bytes that draw the graph.
    ring_bits
        The ring Z_{2^k} of the masked sums: 32 or 64.

    Use :meth:`create` to get the default degree, threshold and a fresh graph seed.
    """

    round_id: str
    clients: tuple[str, ...]
    size: int
    clip: float
    degree: int
    threshold: int
    graph_seed: bytes = field(repr=False)
    ring_bits: int = 32

    def __post_init__(self) -> None:
        if not self.round_id:
            raise SecAggError("round_id: expected a non-empty string, got ''")
        if any(not isinstance(c, str) or not c for c in self.clients):
            raise SecAggError("clients: expected non-empty strings as client ids")
        if len(set(self.clients)) != len(self.clients):
            raise SecAggError("clients: expected distinct client ids, got duplicates")
        if self.size < 0:
            raise SecAggError(f"size: expected a non-negative integer, got {self.size}")
        if len(self.graph_seed) != 32:
            raise SecAggError(f"graph_seed: expected 32 bytes, got {len(self.graph_seed)}")
        ring_dtype(self.ring_bits)
        check_parameters(num_clients=len(self.clients), degree=self.degree, threshold=self.threshold)
        quantization_levels(ring_bits=self.ring_bits, max_clients=len(self.clients))
        if not np.isfinite(self.clip) or self.clip <= 0:
            raise SecAggError(f"clip: expected a finite positive number, got {self.clip!r}")

    @classmethod
    def create(cls, *, round_id: str, clients: tuple[str, ...] | list[str], size: int, clip: float,
               degree: int | None = None, threshold: int | None = None, graph_seed: bytes | None = None,
               ring_bits: int = 32) -> SecAggConfig:
        """A config with :func:`~fedra.secagg.default_parameters` for what is left out, and a fresh seed."""
        default_degree, _ = default_parameters(len(clients))
        degree = default_degree if degree is None else degree
        threshold = (degree + 1) // 2 + 1 if threshold is None else threshold
        return cls(round_id=round_id, clients=tuple(clients), size=size, clip=clip, degree=degree,
                   threshold=threshold, graph_seed=os.urandom(32) if graph_seed is None else graph_seed,
                   ring_bits=ring_bits)

    def to_dict(self) -> dict[str, object]:
        """The config as JSON-compatible values (the seed in hex), to ship inside a round's task."""
        return {"round_id": self.round_id, "clients": list(self.clients), "size": self.size,
                "clip": self.clip, "degree": self.degree, "threshold": self.threshold,
                "graph_seed": self.graph_seed.hex(), "ring_bits": self.ring_bits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecAggConfig:
        """Inverse of :meth:`to_dict`; every field is type-checked and validated."""
        expected: dict[str, type | tuple[type, ...]] = {
            "round_id": str, "clients": list, "size": int, "clip": (int, float), "degree": int,
            "threshold": int, "graph_seed": str, "ring_bits": int}
        if set(data) != set(expected):
            raise SecAggError(f"secagg config: expected the fields {sorted(expected)}, got {sorted(data)}")
        for name, kind in expected.items():
            if not isinstance(data[name], kind) or isinstance(data[name], bool):
                raise SecAggError(f"secagg config: field {name!r} has the wrong type "
                                  f"({type(data[name]).__name__})")
        try:
            seed = bytes.fromhex(data["graph_seed"])
        except ValueError as exc:
            raise SecAggError("secagg config: 'graph_seed' is not hex") from exc
        return cls(round_id=data["round_id"], clients=tuple(data["clients"]), size=data["size"],
                   clip=float(data["clip"]), degree=data["degree"], threshold=data["threshold"],
                   graph_seed=seed, ring_bits=data["ring_bits"])

    @cached_property
    def neighbours(self) -> dict[str, frozenset[str]]:
        """Each client's neighbours in the round's graph, itself excluded."""
        return neighbourhoods(self.clients, degree=self.degree, seed=self.graph_seed)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.clients)}

    def holders(self, client: str) -> frozenset[str]:
        """Who holds shares of ``client``'s secrets: its neighbours and itself."""
        return self.neighbours[client] | {client}

    def abscissa(self, client: str) -> int:
        """The Shamir abscissa of ``client``'s shares: its position in :attr:`clients` plus one."""
        return self._index[client] + 1

    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """The ring's unsigned dtype."""
        return ring_dtype(self.ring_bits)


@final
@dataclass(frozen=True)
class SecAggResult:
    """What a completed round reveals: the sum of the survivors' quantized updates, and who survived.

    ``ring_sum`` is the exact sum in Z_{2^k} of the quantized updates of ``survivors`` (those whose
    masked input the server received); ``total`` is that sum as floats; ``dropped`` lists the clients that
    dropped out, at any stage, whose updates are not in the sum.
    """

    ring_sum: np.ndarray
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    clip: float
    ring_bits: int
    max_clients: int

    @property
    def total(self) -> np.ndarray:
        """The float sum of the survivors' clipped updates (up to quantization error)."""
        return dequantize_sum(self.ring_sum, clip=self.clip, ring_bits=self.ring_bits,
                              max_clients=self.max_clients)
