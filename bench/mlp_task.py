"""The secure-aggregation benchmark's model: a one-hidden-layer MLP in numpy, sized by the environment.

``FEDRA_BENCH_HIDDEN`` hidden units on Fashion-MNIST's 784 features: 128 gives 101,770 parameters
(the "100k" of issue 6), 1,250 gives 993,760 ("1M"). One local epoch of minibatch SGD, float32.
"""

from __future__ import annotations

import os

import numpy as np

HIDDEN = int(os.environ.get("FEDRA_BENCH_HIDDEN", "128"))
FEATURES = 784


def model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w1": (rng.standard_normal((FEATURES, HIDDEN)) * np.sqrt(2 / FEATURES)).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "w2": (rng.standard_normal((HIDDEN, 10)) * np.sqrt(1 / HIDDEN)).astype(np.float32),
            "b2": np.zeros(10, np.float32)}


def _forward(m: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.maximum(x.reshape(len(x), -1) @ m["w1"] + m["b1"], 0)
    return h, h @ m["w2"] + m["b2"]


def train(m: dict[str, np.ndarray], data, config):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(config["seed"])
    lr = np.float32(config["lr"])
    loss = 0.0
    for _ in range(int(config["epochs"])):
        for x, y in data.batches(int(config["batch_size"]), rng=rng):
            x = x.reshape(len(x), -1).astype(np.float32, copy=False)
            h, z = _forward(m, x)
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
            p[np.arange(len(y)), y] -= 1
            p /= len(y)
            gh = (p @ m["w2"].T) * (h > 0)
            m["w2"] -= lr * (h.T @ p)
            m["b2"] -= lr * p.sum(axis=0)
            m["w1"] -= lr * (x.T @ gh)
            m["b1"] -= lr * gh.sum(axis=0)
    return {"loss": loss}


def evaluate(m: dict[str, np.ndarray], data):  # type: ignore[no-untyped-def]
    _, z = _forward(m, data.x.astype(np.float32, copy=False))
    return {"accuracy": float((z.argmax(1) == data.y).mean())}
