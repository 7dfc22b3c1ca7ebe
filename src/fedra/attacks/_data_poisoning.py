"""Data poisoning on the client, before training: label flipping.

Label flipping poisons a malicious client's training labels, so that the update it sends is an honest
update on dishonest data (Biggio, Nelson and Laskov, "Poisoning Attacks against Support Vector Machines",
ICML 2012; in federated learning, Tolpegin, Truex, Gursoy and Liu, "Data Poisoning Attacks Against
Federated Learning Systems", ESORICS 2020, and Fang et al., USENIX Security 2020, who map label ``l`` to
``C - 1 - l``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fedra.errors import ConfigError

__all__ = ["flip_labels"]


def flip_labels(
    labels: npt.ArrayLike,
    *,
    num_classes: int,
    mapping: Mapping[int, int] | None = None,
    fraction: float = 1.0,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[Any]:
    """Flip class labels: ``l -> C - 1 - l``, or by an explicit source-to-target ``mapping``.

    Parameters
    ----------
    labels : array_like
        Integer class labels in ``[0, num_classes)``, any shape.
    num_classes : int
        ``C``, the number of classes, >= 2.
    mapping : Mapping[int, int] or None
        Source class to target class (a targeted attack, e.g. ``{1: 7}``); labels of other classes are left
        alone. ``None`` flips every class to ``C - 1 - l`` (Fang et al., 2020).
    fraction : float
        Share of the eligible labels to flip, in ``[0, 1]``; below 1 the labels flipped are drawn from
        ``rng`` without replacement.
    rng : numpy.random.Generator or None
        Needed when ``fraction < 1``.

    Returns
    -------
    numpy.ndarray
        A new array of the same shape and dtype as ``labels``.

    Raises
    ------
    ConfigError
        If the labels, ``num_classes``, ``mapping``, ``fraction`` or ``rng`` are invalid.

    Examples
    --------
    >>> flip_labels([0, 1, 2, 9], num_classes=10)
    array([9, 8, 7, 0])
    >>> flip_labels([0, 1, 2, 1], num_classes=10, mapping={1: 7})
    array([0, 7, 2, 7])
    """
    y = np.array(labels, copy=True)
    if y.dtype.kind not in "iu":
        raise ConfigError(f"labels: expected integer class labels, got dtype {y.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 2:
        raise ConfigError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    c = int(num_classes)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ConfigError(
            f"labels: expected values in [0, {c}), got values in [{int(y.min())}, {int(y.max())}]"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction: expected a number in [0, 1], got {fraction!r}")
    table = np.arange(c)
    if mapping is None:
        table = c - 1 - table
    else:
        for source, target in mapping.items():
            for what, value in (("source", source), ("target", target)):
                if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < c:
                    raise ConfigError(
                        f"mapping {what}: expected a class in [0, {c}), got {value!r}"
                    )
            table[int(source)] = int(target)
    eligible = np.flatnonzero(table[y.reshape(-1)] != y.reshape(-1))
    if fraction < 1.0:
        if rng is None:
            raise ConfigError("rng: expected a numpy Generator when fraction < 1, got None")
        count = int(np.floor(fraction * eligible.size))
        eligible = np.sort(rng.choice(eligible, size=count, replace=False))
    flat = y.reshape(-1)
    flat[eligible] = table[flat[eligible]]
    return flat.reshape(y.shape)
