"""A tiny numpy model for simulation tests: softmax regression, 64 features x 10 classes (650 params)."""

from __future__ import annotations

import os

import numpy as np

BUILDS = 0
LOADS = 0


def model() -> dict[str, np.ndarray]:
    global BUILDS
    BUILDS += 1
    rng = np.random.default_rng(0)
    return {"w": (rng.standard_normal((64, 10)) * 0.01).astype(np.float32), "b": np.zeros(10, np.float32)}


def load(x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    global LOADS
    LOADS += 1
    from fedra.frameworks.numpy import ArrayData

    return ArrayData(x, y)


def _grad(m: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    z = x @ m["w"] + m["b"]
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return x.T @ p, p.sum(axis=0), loss


def train(m: dict[str, np.ndarray], data, config):  # type: ignore[no-untyped-def]
    if slow := os.environ.get("FEDRA_TEST_SLOW"):
        import time

        time.sleep(float(slow))  # a slower client, so that a test can interrupt a round
    fault = os.environ.get("FEDRA_TEST_FAULT", "")
    if fault and config["client_id"] == "client-0003":
        if fault == "exit":
            os._exit(3)  # the worker process dies mid-task
        if fault == "raise":
            raise ValueError("bad batch")
        if fault == "nan":
            m["w"][0, 0] = np.nan
            return {"loss": 0.0}
    rng = np.random.default_rng(config["seed"])
    steps = int(config.get("steps", 0))
    loss = 0.0
    n = 0
    for _ in range(config["epochs"]):
        for x, y in data.batches(config["batch_size"], rng=rng):
            gw, gb, loss = _grad(m, x, y)
            m["w"] -= np.float32(config["lr"]) * gw.astype(np.float32)
            m["b"] -= np.float32(config["lr"]) * gb.astype(np.float32)
            n += 1
            if steps and n >= steps:
                return {"loss": loss, "builds": BUILDS, "loads": LOADS}
    return {"loss": loss, "builds": BUILDS, "loads": LOADS}


def evaluate(m: dict[str, np.ndarray], data):  # type: ignore[no-untyped-def]
    z = data.x @ m["w"] + m["b"]
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(data.y)), data.y] + 1e-12).mean())
    return {"loss": loss, "accuracy": float((z.argmax(1) == data.y).mean())}
