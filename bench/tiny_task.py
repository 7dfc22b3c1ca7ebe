"""The simulation benchmark's tiny model: softmax regression on digits (64x10 + 10 = 650 parameters).

One local step per task (one minibatch of the client's data), numpy only, so the benchmark measures the
framework, not the model.
"""

import numpy as np


def model():
    return {"w": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)}


def train(m, data, config):
    x, y = data.x[: config["batch_size"]], data.y[: config["batch_size"]]
    z = x @ m["w"] + m["b"]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    m["w"] -= np.float32(config["lr"]) * (x.T @ p)
    m["b"] -= np.float32(config["lr"]) * p.sum(axis=0)


def evaluate(m, data):
    z = data.x @ m["w"] + m["b"]
    return {"accuracy": float((z.argmax(1) == data.y).mean())}
