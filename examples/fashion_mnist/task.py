"""A small CNN for Fashion-MNIST: two 5x5 convolutions with max-pooling, then a linear classifier."""

import torch
import torch.nn.functional as F
from torch import nn

from fedra.frameworks.torch import ProximalTerm


def model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),    # 28x28 -> 24x24 -> 12x12
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),   # 12x12 -> 8x8 -> 4x4
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


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
    with torch.no_grad():   # in chunks: 10,000 test images at once would need ~0.5 GB of activations
        logits = torch.cat([model(x) for x in data.x.split(1000)])
    return {"loss": F.cross_entropy(logits, data.y).item(),
            "accuracy": (logits.argmax(1) == data.y).float().mean().item()}
