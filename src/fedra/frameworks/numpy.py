"""The numpy adapter: a model is a ``dict[str, np.ndarray]`` that ``train`` updates in place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

import numpy as np

from fedra.errors import SchemaMismatch

__all__ = ["ADAPTER", "ArrayData", "NumpyFramework"]


@dataclass(frozen=True, slots=True)
class ArrayData:
    """A client's partition as arrays, with a minibatch iterator."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, *, rng: np.random.Generator | None = None) -> Any:
        """Yield ``(x, y)`` minibatches; shuffled when ``rng`` is given."""
        order = rng.permutation(len(self.y)) if rng is not None else np.arange(len(self.y))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@final
class NumpyFramework:
    name = "numpy"

    def setup_worker(self) -> None:
        pass

    def seed(self, seed: int) -> None:
        pass  # numpy models take config["seed"] into their own Generator

    def get_arrays(self, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in model.items()}

    def set_arrays(self, model: dict[str, np.ndarray], arrays: Mapping[str, np.ndarray]) -> None:
        if model.keys() != arrays.keys():
            raise SchemaMismatch(f"expected arrays {sorted(model)}, got {sorted(arrays)}")
        for k, a in arrays.items():
            if model[k].shape != a.shape or model[k].dtype != a.dtype:
                raise SchemaMismatch(f"array {k!r}: expected {model[k].dtype}{list(model[k].shape)}, "
                                     f"got {a.dtype}{list(a.shape)}", name=k)
            model[k] = np.array(a, copy=True)

    def prepare(self, x: np.ndarray, y: np.ndarray) -> ArrayData:
        return ArrayData(x, y)


ADAPTER = NumpyFramework()
