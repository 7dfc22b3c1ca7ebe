"""The robustness and DP-accuracy benchmarks' task: softmax regression on Fashion-MNIST, numpy only.

784 x 10 + 10 = 7,850 parameters; ``epochs`` passes of minibatch SGD over the client's data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FEATURES = 28 * 28


def model() -> dict[str, np.ndarray]:
    return {"w": np.zeros((FEATURES, 10), np.float32), "b": np.zeros(10, np.float32)}


def load(x: np.ndarray, y: np.ndarray) -> Any:
    from fedra.frameworks.numpy import ArrayData

    return ArrayData(np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32), y)


def _probabilities(m: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    z = x @ m["w"] + m["b"]
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p


def train(m: dict[str, np.ndarray], data: Any, config: dict[str, Any]) -> dict[str, float]:
    rng = np.random.default_rng(config["seed"])
    lr = np.float32(config["lr"])
    for _ in range(config["epochs"]):
        for x, y in data.batches(config["batch_size"], rng=rng):
            p = _probabilities(m, x)
            p[np.arange(len(y)), y] -= 1.0
            p /= len(y)
            m["w"] -= lr * (x.T @ p).astype(np.float32)
            m["b"] -= lr * p.sum(axis=0).astype(np.float32)
    return {}


def evaluate(m: dict[str, np.ndarray], data: Any) -> dict[str, float]:
    p = _probabilities(m, data.x)
    return {"accuracy": float((p.argmax(1) == data.y).mean())}
