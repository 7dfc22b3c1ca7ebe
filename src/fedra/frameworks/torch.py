"""The PyTorch adapter: ``state_dict`` to named numpy arrays and back, dtype-preserving.

Also the helpers a training loop needs: :class:`TensorData` (a partition as tensors with a seeded
minibatch iterator) and :class:`ProximalTerm` (FedProx, Li et al. 2020).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, final

import numpy as np
import torch

from fedra.errors import SchemaMismatch

__all__ = ["ADAPTER", "ProximalTerm", "TensorData", "TorchFramework", "from_arrays", "to_arrays"]


def to_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as numpy arrays (copies), keeping every dtype numpy has."""
    out: dict[str, np.ndarray] = {}
    for name, t in model.state_dict().items():
        if t.dtype == torch.bfloat16:
            raise SchemaMismatch(f"tensor {name!r}: bfloat16 has no numpy dtype; expected a dtype numpy "
                                 "represents (float16/32/64, ints, bool): convert the model, e.g. model.float()",
                                 name=name, found="bfloat16")
        out[name] = t.detach().cpu().numpy().copy()
    return out


def from_arrays(model: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load named arrays into ``model`` in place; names, dtypes and shapes must match exactly."""
    current = model.state_dict()
    if current.keys() != arrays.keys():
        missing = sorted(set(current) - set(arrays))
        extra = sorted(set(arrays) - set(current))
        raise SchemaMismatch(f"state_dict: missing {missing or 'none'}, unexpected {extra or 'none'}")
    state = {}
    for name, t in current.items():
        a = np.array(arrays[name], copy=True)  # decoded payloads are read-only views; the model owns a copy
        found = torch.from_numpy(a)
        if found.dtype != t.dtype or tuple(a.shape) != tuple(t.shape):
            raise SchemaMismatch(f"tensor {name!r}: expected {t.dtype}{list(t.shape)}, "
                                 f"got {found.dtype}{list(a.shape)}",
                                 name=name, expected=str(t.dtype), found=str(found.dtype))
        state[name] = found
    model.load_state_dict(state, strict=True)


class TensorData:
    """A partition as tensors: ``x``, ``y``, ``len(data)`` and seeded minibatches."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.y = torch.from_numpy(np.ascontiguousarray(y))

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, *, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` minibatches; shuffled with torch's global generator (fedra seeds it per task)."""
        n = len(self.y)
        order = torch.randperm(n) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@final
class ProximalTerm:
    """FedProx's proximal term (Li et al. 2020, eq. 2): ``mu/2 * ||w - w_t||^2``.

    Create it at the start of ``train``, while the model still holds the global weights ``w_t``; add
    ``prox(model)`` to each minibatch's loss. With ``mu == 0`` it is exactly zero and costs nothing.
    """

    def __init__(self, model: torch.nn.Module, mu: float) -> None:
        if mu < 0:
            raise ValueError(f"proximal mu: expected >= 0, got {mu}")
        self.mu = float(mu)
        self._ref = [p.detach().clone() for p in model.parameters()] if mu else []

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        if not self.mu:
            return torch.zeros(())
        total = sum((torch.sum((p - r) ** 2) for p, r in zip(model.parameters(), self._ref, strict=True)),
                    torch.zeros(()))
        return 0.5 * self.mu * total


@final
class TorchFramework:
    name = "torch"

    def setup_worker(self) -> None:
        # One thread per worker: the pool already uses every core, and results do not depend on threading.
        torch.set_num_threads(1)

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def get_arrays(self, model: Any) -> dict[str, np.ndarray]:
        return to_arrays(model)

    def set_arrays(self, model: Any, arrays: Mapping[str, np.ndarray]) -> None:
        from_arrays(model, arrays)

    def prepare(self, x: np.ndarray, y: np.ndarray) -> TensorData:
        return TensorData(x, y)


ADAPTER = TorchFramework()
