"""The attack simulator: simulated malicious clients, for measuring defences (``[attack]``, simulation only).

Model attacks run as the driver's ``update_hook``, once the round's replies are all in: the malicious
clients' updates (model minus global model) are rewritten by :func:`fedra.attacks.apply_model_attack`,
with the round's honest updates when the kind colludes and ``attack.collude`` is set. A transport wrapper
that rewrote replies as they arrive could not give colluding attackers (ALIE, IPM, min-max, min-sum) the
honest updates of the round, which their threat model grants; the hook sees the whole round, in task order,
so the result is also independent of arrival order. Data attacks (label flipping) poison the attacker's
labels before it trains: :func:`poisoned_partition` replaces its partition in the workers.

The attackers are chosen once, from ``job.seed`` (:func:`fedra.attacks.select_malicious`); randomised
attacks draw from a generator seeded by the seed and the round, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import final

import numpy as np

from fedra.attacks import AttackConfig, apply_data_attack, apply_model_attack
from fedra.data import Dataset

__all__ = ["Adversary", "poisoned_partition"]

Arrays = Mapping[str, np.ndarray]
_MODEL_TAG = 0xA77A
_DATA_TAG = 0xDA7A


@final
class Adversary:
    """The driver's ``update_hook`` for a model attack by the clients ``malicious``."""

    def __init__(self, config: AttackConfig, malicious: Sequence[str], *, seed: int) -> None:
        self.config = config
        self.malicious = frozenset(malicious)
        self.seed = seed

    def __call__(self, rnd: int, client_ids: Sequence[str], models: Sequence[Arrays],
                 global_params: Arrays) -> list[Arrays]:
        out = list(models)
        if self.config.target != "model":
            return out
        bad = [i for i, c in enumerate(client_ids) if c in self.malicious]
        if not bad:
            return out
        good = [i for i, c in enumerate(client_ids) if c not in self.malicious]
        names = [n for n, g in global_params.items() if g.dtype.kind == "f"]

        def delta(m: Arrays) -> dict[str, np.ndarray]:
            return {n: np.subtract(m[n], global_params[n], dtype=np.float64) for n in names}

        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, rnd, _MODEL_TAG])))
        attacked = apply_model_attack(
            self.config, malicious=[delta(models[i]) for i in bad],
            honest=[delta(models[i]) for i in good] or None, num_clients=len(models), rng=rng)
        for i, d in zip(bad, attacked, strict=True):
            model = dict(models[i])
            for n in names:
                g = global_params[n]
                model[n] = np.add(g, d[n], dtype=np.float64).astype(g.dtype)
            out[i] = model
        return out


def poisoned_partition(config: AttackConfig, data: Dataset, *, seed: int, index: int) -> Dataset:
    """Client ``index``'s partition with its labels poisoned by the data attack ``config``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, _DATA_TAG])))
    y = apply_data_attack(config, labels=data.y, num_classes=data.num_classes, rng=rng)
    return Dataset(data.x, np.asarray(y, dtype=np.int64), data.num_classes, f"{data.name} (poisoned)")
