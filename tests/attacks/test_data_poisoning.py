"""Tests of label flipping, the data-poisoning attack applied on the client before training."""

from __future__ import annotations

import numpy as np
import pytest

from fedra.attacks import flip_labels
from fedra.errors import ConfigError


def test_flip_labels_reverses_classes() -> None:
    labels = np.array([[0, 1], [2, 9]], np.int64)
    out = flip_labels(labels, num_classes=10)
    np.testing.assert_array_equal(out, [[9, 8], [7, 0]])
    assert out.dtype == np.int64 and out.shape == (2, 2)
    np.testing.assert_array_equal(labels, [[0, 1], [2, 9]])  # the input is not modified
    # odd C: the middle class maps to itself
    np.testing.assert_array_equal(flip_labels(np.arange(5, dtype=np.uint8), num_classes=5), [4, 3, 2, 1, 0])


def test_flip_labels_targeted_mapping() -> None:
    out = flip_labels([0, 1, 2, 1, 7], num_classes=10, mapping={1: 7, 7: 1})
    np.testing.assert_array_equal(out, [0, 7, 2, 7, 1])


def test_flip_labels_fraction_flips_a_seeded_subset() -> None:
    labels = np.arange(100) % 10
    a = flip_labels(labels, num_classes=10, fraction=0.3, rng=np.random.default_rng(4))
    b = flip_labels(labels, num_classes=10, fraction=0.3, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    changed = np.flatnonzero(a != labels)
    assert changed.size == 30  # every label changes under l -> 9 - l with C = 10
    np.testing.assert_array_equal(a[changed], 9 - labels[changed])
    np.testing.assert_array_equal(flip_labels(labels, num_classes=10, fraction=0.0, rng=np.random.default_rng(0)), labels)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labels": [0.5], "num_classes": 2}, "labels: expected integer class labels"),
    ({"labels": [0, 3], "num_classes": 3}, r"labels: expected values in \[0, 3\), got values in \[0, 3\]"),
    ({"labels": [0], "num_classes": 1}, "num_classes: expected an int >= 2, got 1"),
    ({"labels": [0], "num_classes": 3, "mapping": {0: 3}}, r"mapping target: expected a class in \[0, 3\), got 3"),
    ({"labels": [0], "num_classes": 3, "fraction": 1.5}, r"fraction: expected a number in \[0, 1\], got 1.5"),
    ({"labels": [0], "num_classes": 3, "fraction": 0.5}, "rng: expected a numpy Generator when fraction < 1"),
])
def test_flip_labels_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        flip_labels(**kwargs)  # type: ignore[arg-type]
