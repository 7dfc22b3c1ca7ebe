"""The explicit, serialisable state of a strategy.

Everything a strategy remembers between rounds lives here: the round counter, the sampler's random
generator and the server optimizer's moments. ``to_bytes``/``from_bytes`` round-trip it exactly (arrays
bit for bit, the PCG64 generator state to the same next draw), so a checkpointed run resumes as if never
stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedra.errors import RecordError, StateError
from fedra.records import decode_arrays, encode_arrays

__all__ = ["StrategyState"]

_META_KEY = "fedra.strategy_state"


@dataclass(frozen=True)
class StrategyState:
    """Round counter, sampler RNG state and optimizer moments (arrays named ``"<slot>/<param>"``)."""

    round: int
    rng_state: Mapping[str, Any]
    moments: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def initial(cls, *, seed: int, moments: Mapping[str, np.ndarray] | None = None) -> StrategyState:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5A4D])))
        return cls(round=0, rng_state=rng.bit_generator.state, moments=dict(moments or {}))

    def generator(self) -> np.random.Generator:
        """A new generator positioned exactly at this state's next draw."""
        bg = np.random.PCG64()
        bg.state = dict(self.rng_state)  # type: ignore[assignment]
        return np.random.Generator(bg)

    def advanced(self, *, rng: np.random.Generator | None = None,
                 moments: Mapping[str, np.ndarray] | None = None, round: int | None = None) -> StrategyState:
        return replace(
            self,
            rng_state=self.rng_state if rng is None else rng.bit_generator.state,
            moments=self.moments if moments is None else dict(moments),
            round=self.round if round is None else round,
        )

    def to_bytes(self) -> memoryview:
        meta = json.dumps({"round": self.round, "rng_state": self.rng_state}, separators=(",", ":"))
        return encode_arrays(self.moments, {_META_KEY: meta})

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> StrategyState:
        try:
            arrays, metadata = decode_arrays(data)
            obj = json.loads(metadata[_META_KEY])
            state = cls(round=int(obj["round"]), rng_state=obj["rng_state"],
                        moments={k: np.array(v) for k, v in arrays.items()})
            state.generator()  # validates the RNG state
        except (RecordError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"cannot restore strategy state: expected a fedra state payload, {exc}") from exc
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StrategyState):
            return NotImplemented
        return (self.round == other.round and json.dumps(self.rng_state, sort_keys=True)
                == json.dumps(other.rng_state, sort_keys=True)
                and self.moments.keys() == other.moments.keys()
                and all(np.array_equal(self.moments[k], other.moments[k]) for k in self.moments))

    __hash__ = None  # type: ignore[assignment]
