"""Client-level differential privacy: mechanisms, the privacy accountant, and a one-run audit.

The math is pure functions; the bookkeeping (steps taken, budget spent) is the :class:`Accountant`, whose
state is JSON for the checkpoint. Every mechanism that samples takes an injected
:class:`numpy.random.Generator`. This layer imports numpy, scipy (binomial tails), ``dp_accounting`` and
:mod:`fedra.errors` only; invalid arguments raise :class:`~fedra.errors.ConfigError`, a state that cannot
be restored :class:`~fedra.errors.StateError`.

- Mechanisms (:mod:`~fedra.privacy._mechanisms`; McMahan et al. 2018, Andrew et al. 2021):
  :func:`global_norm`, :func:`clip_update`, :func:`sum_updates`, :func:`add_gaussian_noise`,
  :func:`noised_mean`, :func:`dp_fedavg`, :func:`adaptive_clip_norm`, :func:`adaptive_noise_multiplier`,
  :func:`local_dp_update`; the :data:`Update` type.
- Accounting (:mod:`~fedra.privacy._accountant`, over ``dp_accounting``): :class:`Accountant` (RDP or
  PLD; Poisson, fixed-size, full or local), :func:`calibrate_noise`; :data:`DEFAULT_PLD_DISCRETIZATION`,
  the literal types :data:`Backend` and :data:`SamplingScheme`.
- Configuration (:mod:`~fedra.privacy._config`): :class:`DPConfig`, :class:`AdaptiveClipping`, the
  literal type :data:`DPMode`.
- Bookkeeping for the round driver (:mod:`~fedra.privacy._fedavg`): :class:`DPFedAvg` (clip norm,
  noise, accountant, in round order; JSON state for the checkpoint).
- Auditing (:mod:`~fedra.privacy._audit`; Steinke, Nasr and Jagielski 2023): :func:`audit_p_value`,
  :func:`audit_epsilon_lower_bound`, :func:`one_run_audit`, :func:`canary_audit`, :class:`AuditResult`.
"""

from fedra.privacy._accountant import (
    DEFAULT_PLD_DISCRETIZATION,
    Accountant,
    Backend,
    SamplingScheme,
    calibrate_noise,
)
from fedra.privacy._audit import (
    AuditResult,
    audit_epsilon_lower_bound,
    audit_p_value,
    canary_audit,
    one_run_audit,
)
from fedra.privacy._config import AdaptiveClipping, DPConfig, DPMode
from fedra.privacy._fedavg import DPFedAvg
from fedra.privacy._mechanisms import (
    Update,
    adaptive_clip_norm,
    adaptive_noise_multiplier,
    add_gaussian_noise,
    clip_update,
    dp_fedavg,
    global_norm,
    local_dp_update,
    noised_mean,
    sum_updates,
)

__all__ = [
    "DEFAULT_PLD_DISCRETIZATION",
    "Accountant",
    "AdaptiveClipping",
    "AuditResult",
    "Backend",
    "DPConfig",
    "DPFedAvg",
    "DPMode",
    "SamplingScheme",
    "Update",
    "adaptive_clip_norm",
    "adaptive_noise_multiplier",
    "add_gaussian_noise",
    "audit_epsilon_lower_bound",
    "audit_p_value",
    "calibrate_noise",
    "canary_audit",
    "clip_update",
    "dp_fedavg",
    "global_norm",
    "local_dp_update",
    "noised_mean",
    "one_run_audit",
    "sum_updates",
]
