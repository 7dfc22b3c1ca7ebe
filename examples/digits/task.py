"""The whole client side of a fedra job: a model, how to train it, how to evaluate it."""

import torch
import torch.nn.functional as F
from torch import nn

from fedra.frameworks.torch import ProximalTerm


def model():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(model, data, config):
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    prox = ProximalTerm(model, config["proximal_mu"])
    for _ in range(config["epochs"]):
        for x, y in data.batches(config["batch_size"]):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y) + prox(model)
            loss.backward()
            opt.step()
    return {"loss": loss.item()}


def evaluate(model, data):
    with torch.no_grad():
        logits = model(data.x)
    return {"loss": F.cross_entropy(logits, data.y).item(),
            "accuracy": (logits.argmax(1) == data.y).float().mean().item()}
