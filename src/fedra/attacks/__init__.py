"""Attacks on federated learning, for evaluating defences: model poisoning and data poisoning.

Pure numpy functions beside :mod:`fedra.aggregation` (this package imports only it and
:mod:`fedra.errors`); randomness comes from an injected ``numpy.random.Generator``. Model-poisoning
attacks take the malicious clients' own updates (model minus global model) and, where the paper's threat
model lets them collude, the round's honest updates, and return what the attackers send instead.

- Model poisoning (:mod:`~fedra.attacks._model_poisoning`): :func:`sign_flip`, :func:`gaussian_noise`,
  :func:`scale` (model replacement), :func:`alie` and :func:`alie_z` ("A Little Is Enough"), :func:`ipm`
  (inner-product manipulation), :func:`min_max`, :func:`min_sum`.
- Data poisoning (:mod:`~fedra.attacks._data_poisoning`): :func:`flip_labels`.
- Configuration (:mod:`~fedra.attacks._config`): :class:`AttackConfig` (kind, fraction, parameters),
  the registry :data:`ATTACKS` of :class:`AttackKind`, :func:`select_malicious`,
  :func:`apply_model_attack` and :func:`apply_data_attack`.
"""

from fedra.attacks._config import (
    ATTACKS,
    AttackConfig,
    AttackKind,
    apply_data_attack,
    apply_model_attack,
    select_malicious,
)
from fedra.attacks._data_poisoning import flip_labels
from fedra.attacks._model_poisoning import (
    alie,
    alie_z,
    gaussian_noise,
    ipm,
    min_max,
    min_sum,
    scale,
    sign_flip,
)

__all__ = [
    "ATTACKS",
    "AttackConfig",
    "AttackKind",
    "alie",
    "alie_z",
    "apply_data_attack",
    "apply_model_attack",
    "flip_labels",
    "gaussian_noise",
    "ipm",
    "min_max",
    "min_sum",
    "scale",
    "select_malicious",
    "sign_flip",
]
