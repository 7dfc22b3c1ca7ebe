"""Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization"; Hsu et al. 2019 for FedAvgM).

The policy here owns naming and bookkeeping of the moments; the update rules are the pure functions in
:mod:`fedra.aggregation`. Only floating-point arrays are optimised: integer arrays (counters such as
BatchNorm's ``num_batches_tracked``) take the aggregate as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, final

import numpy as np

from fedra import aggregation as agg
from fedra.errors import ConfigError

__all__ = ["OPTIMIZERS", "ServerOptimizer"]

OptimizerKind = Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]
OPTIMIZERS: tuple[str, ...] = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
Arrays = Mapping[str, np.ndarray]


@final
@dataclass(frozen=True, slots=True)
class ServerOptimizer:
    """How the server turns the round's aggregate into the next global model.

    ``fedavg`` with ``lr=1`` takes the aggregate as the new model; the others treat
    ``delta = aggregate - global`` as a pseudo-gradient.
    """

    kind: OptimizerKind = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ConfigError(f"server optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.kind!r}")
        if not self.lr > 0:
            raise ConfigError(f"server lr: expected > 0, got {self.lr}")
        for name in ("momentum", "beta1", "beta2"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{name}: expected 0 <= {name} < 1, got {v}")
        if not self.tau > 0:
            raise ConfigError(f"tau: expected > 0, got {self.tau}")

    def init(self, params: Arrays) -> dict[str, np.ndarray]:
        """The initial moments for ``params``."""
        out: dict[str, np.ndarray] = {}
        for name, p in params.items():
            if p.dtype.kind != "f":
                continue
            if self.kind == "fedavgm":
                out[f"momentum/{name}"] = np.zeros_like(p)
            elif self.kind in ("fedadam", "fedyogi", "fedadagrad"):
                out[f"m/{name}"] = np.zeros_like(p)
                out[f"v/{name}"] = agg.initial_second_moment(p, tau=self.tau)
        return out

    def step(self, params: Arrays, aggregate: Arrays, moments: Arrays
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Return the new global model and the new moments; inputs are not modified."""
        new_params: dict[str, np.ndarray] = {}
        new_moments: dict[str, np.ndarray] = {}
        for name, x in params.items():
            a = aggregate[name]
            if x.dtype.kind != "f" or (self.kind == "fedavg" and self.lr == 1.0):
                new_params[name] = np.array(a, dtype=x.dtype)
                continue
            delta = (a.astype(np.float64) - x).astype(x.dtype) if x.dtype != np.float64 else a - x
            if self.kind == "fedavg":
                new_params[name] = (x + self.lr * delta).astype(x.dtype)
            elif self.kind == "fedavgm":
                new_params[name], new_moments[f"momentum/{name}"] = agg.fedavgm_step(
                    params=x, delta=delta, momentum=moments[f"momentum/{name}"], lr=self.lr, beta=self.momentum)
            else:
                m, v = moments[f"m/{name}"], moments[f"v/{name}"]
                if self.kind == "fedadagrad":
                    x2, m2, v2 = agg.fedadagrad_step(params=x, delta=delta, m=m, v=v, lr=self.lr,
                                                     beta1=self.beta1, tau=self.tau)
                elif self.kind == "fedadam":
                    x2, m2, v2 = agg.fedadam_step(params=x, delta=delta, m=m, v=v, lr=self.lr,
                                                  beta1=self.beta1, beta2=self.beta2, tau=self.tau)
                else:
                    x2, m2, v2 = agg.fedyogi_step(params=x, delta=delta, m=m, v=v, lr=self.lr,
                                                  beta1=self.beta1, beta2=self.beta2, tau=self.tau)
                new_params[name], new_moments[f"m/{name}"], new_moments[f"v/{name}"] = x2, m2, v2
        return new_params, new_moments
