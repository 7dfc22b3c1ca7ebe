"""The synthetic(alpha, beta) federated data of FedProx.

Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith 2020, "Federated Optimization in Heterogeneous Networks"
(MLSys; arXiv:1812.06127), section 5.1 and its reference generator ``data/synthetic_*/generate_synthetic.py``
in github.com/litian96/FedProx. For each user ``k``:

- ``n_k = floor(LogNormal(4, 2)) + 50`` samples;
- ``u_k ~ N(0, alpha)``, ``W_k ~ N(u_k, 1)`` of shape ``(dim, num_classes)``, ``b_k ~ N(u_k, 1)``;
- ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)`` of shape ``(dim,)``;
- ``x ~ N(v_k, Sigma)`` with ``Sigma`` diagonal, ``Sigma_jj = j^-1.2``;
- ``y = argmax(softmax(x W_k + b_k))``.

The second argument of each ``N(., .)`` is a standard deviation, as in the reference code (the paper's
notation reads as a variance). In the IID variant (the reference ``synthetic_iid``) all users share one
``W, b ~ N(0, 1)`` and ``v_k = 0``. Each user's samples are shuffled and split 90/10 into train and test.

Note that ``u_k`` adds the same amount to every class's logit, and softmax is shift-invariant, so
``alpha`` changes the optimal model's parameters but not the data: the labels for a given random stream
are the same for every ``alpha``. Label and feature heterogeneity come from ``beta`` and from the per-user
draws of ``W_k`` and ``v_k``.
"""

from __future__ import annotations

import numpy as np

from fedra.data._dataset import Dataset, FederatedData
from fedra.errors import ConfigError

__all__ = ["synthetic_fedprox"]


def synthetic_fedprox(
    *,
    alpha: float,
    beta: float,
    num_users: int = 30,
    dim: int = 60,
    num_classes: int = 10,
    rng: np.random.Generator,
    iid: bool = False,
    test_fraction: float = 0.1,
) -> FederatedData:
    """Generate FedProx's synthetic(alpha, beta) dataset, one client per user.

    Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (MLSys), section 5.1; see the
    module docstring for the generative model.

    Parameters
    ----------
    alpha : float
        Spread of the per-user model means ``u_k`` (standard deviation), ``>= 0``. Ignored when
        ``iid``.
    beta : float
        Spread of the per-user feature means ``B_k`` (standard deviation), ``>= 0``. Ignored when
        ``iid``.
    num_users : int, default 30
        Number of users (clients), ``>= 1``.
    dim : int, default 60
        Feature dimension, ``>= 1``.
    num_classes : int, default 10
        Number of classes, ``>= 2``.
    rng : numpy.random.Generator
        Source of randomness.
    iid : bool, default False
        Generate the reference's IID variant instead (one shared model, zero feature means).
    test_fraction : float, default 0.1
        Fraction of each user's samples held out, ``0 < test_fraction < 1``; the reference uses 0.1.
        Each user keeps ``floor((1 - test_fraction) * n_k)`` samples for training.

    Returns
    -------
    FederatedData
        ``partitions`` holds each user's training samples, ``client_tests`` each user's held-out
        samples and ``test`` their union (in user order). Features are float32 ``(n, dim)``; labels
        are computed from the float32 features so they agree exactly with what a model sees.

    Raises
    ------
    ConfigError
        If an argument is out of range.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
                or not np.isfinite(value):
            raise ConfigError(
                f"{name}: expected a finite number >= 0 (FedProx uses 0, 0.5 and 1), got {value!r}"
            )
    for name, value, low in (("num_users", num_users, 1), ("dim", dim, 1),
                             ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) \
            or not 0 < test_fraction < 1:
        raise ConfigError(
            f"test_fraction: expected a number strictly between 0 and 1 (FedProx uses 0.1), got "
            f"{test_fraction!r}"
        )
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )

    sizes = rng.lognormal(4.0, 2.0, num_users).astype(np.int64) + 50
    # Feature standard deviations: Sigma_jj = j^-1.2 for j = 1..dim.
    scale = np.arange(1, dim + 1, dtype=np.float64) ** -0.6
    if iid:
        shared_w = rng.normal(0.0, 1.0, (dim, num_classes))
        shared_b = rng.normal(0.0, 1.0, num_classes)
        means = np.zeros((num_users, dim))
    else:
        model_mean = rng.normal(0.0, float(alpha), num_users)
        feature_shift = rng.normal(0.0, float(beta), num_users)
        means = rng.normal(feature_shift[:, None], 1.0, (num_users, dim))

    train: list[Dataset] = []
    tests: list[Dataset] = []
    for k in range(num_users):
        if iid:
            w, b = shared_w, shared_b
        else:
            w = rng.normal(model_mean[k], 1.0, (dim, num_classes))
            b = rng.normal(model_mean[k], 1.0, num_classes)
        n = int(sizes[k])
        x = (means[k] + rng.standard_normal((n, dim)) * scale).astype(np.float32)
        # argmax(softmax(z)) == argmax(z); use the stored float32 features so labels match them.
        y = np.argmax(x.astype(np.float64) @ w + b, axis=1).astype(np.int64)
        user = Dataset(x=x, y=y, num_classes=num_classes, name=f"synthetic/user{k:03d}")
        order = rng.permutation(n)
        cut = int((1 - test_fraction) * n)
        train.append(user.subset(np.sort(order[:cut]), name=f"synthetic/user{k:03d}/train"))
        tests.append(user.subset(np.sort(order[cut:]), name=f"synthetic/user{k:03d}/test"))

    test = Dataset(
        x=np.concatenate([t.x for t in tests]),
        y=np.concatenate([t.y for t in tests]),
        num_classes=num_classes,
        name="synthetic/test",
    )
    return FederatedData(
        name="synthetic", partitions=train, test=test, num_classes=num_classes, client_tests=tests
    )
