"""Multinomial logistic regression (one linear layer, 60 features -> 10 classes), as in FedProx's
synthetic experiments; plain SGD as in the paper, plus the proximal term when proximal_mu > 0."""

import torch
import torch.nn.functional as F
from torch import nn

from fedra.frameworks.torch import ProximalTerm


def model():
    return nn.Linear(60, 10)


def train(model, data, config):
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    prox = ProximalTerm(model, config["proximal_mu"])
    for _ in range(config["epochs"]):
        for x, y in data.batches(config["batch_size"]):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            (loss + prox(model)).backward()
            opt.step()
    return {"loss": loss.item()}


def evaluate(model, data):
    with torch.no_grad():
        logits = model(data.x)
    return {"loss": F.cross_entropy(logits, data.y).item(),
            "accuracy": (logits.argmax(1) == data.y).float().mean().item()}
