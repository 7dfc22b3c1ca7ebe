"""Tests of Dataset and FederatedData invariants, and of fedra.data's public surface."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import fedra.data
from fedra.data import Dataset, FederatedData
from fedra.errors import ConfigError, DatasetError


def make(n: int = 6, num_classes: int = 3, name: str = "toy") -> Dataset:
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = (np.arange(n) % num_classes).astype(np.int64)
    return Dataset(x=x, y=y, num_classes=num_classes, name=name)


def test_dataset_len_subset_and_class_counts() -> None:
    ds = make()
    assert len(ds) == 6
    sub = ds.subset(np.array([4, 1]))
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.x, [[8, 9], [2, 3]])
    np.testing.assert_array_equal(sub.y, [1, 1])
    assert sub.name == "toy" and sub.num_classes == 3
    assert ds.subset([0], name="one").name == "one"
    assert len(ds.subset(np.array([], dtype=np.int64))) == 0
    assert len(ds.subset([])) == 0
    np.testing.assert_array_equal(sub.class_counts(), [0, 2, 0])
    assert sub.class_counts().dtype == np.int64


def test_dataset_is_frozen() -> None:
    ds = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"y": np.zeros(6, dtype=np.int32)}, r"expected y to be a 1-D int64 array, got 1-D int32"),
        ({"y": np.zeros((6, 1), dtype=np.int64)}, r"expected y to be a 1-D int64 array, got 2-D"),
        ({"x": np.zeros((5, 2))}, r"expected as many feature rows as labels \(6\), got x of shape \(5, 2\)"),
        ({"num_classes": 0}, r"expected num_classes to be a positive integer, got 0"),
        ({"num_classes": 2}, r"expected labels in \[0, 2\), got labels from 0 to 2"),
        ({"y": np.array([0, 1, 2, -1, 0, 0])}, r"expected labels in \[0, 3\), got labels from -1 to 2"),
        ({"x": [[0.0]] * 6}, r"expected x and y to be numpy arrays, got list"),
    ],
)
def test_dataset_rejects_broken_invariants(kwargs: dict[str, object], fragment: str) -> None:
    base = {"x": np.zeros((6, 2)), "y": np.arange(6, dtype=np.int64) % 3, "num_classes": 3, "name": "bad"}
    base.update(kwargs)
    with pytest.raises(DatasetError, match=r"dataset 'bad': " + fragment):
        Dataset(**base)  # type: ignore[arg-type]


def test_subset_rejects_bad_indices() -> None:
    ds = make()
    with pytest.raises(ConfigError, match=r"expected indices in \[0, 6\), got indices from 0 to 6"):
        ds.subset([0, 6])
    with pytest.raises(ConfigError, match="expected a 1-D array of integer indices, got a 1-D float64"):
        ds.subset([0.0, 1.0])
    with pytest.raises(ConfigError, match=r"got indices from -1 to 0"):
        ds.subset([-1, 0])


def test_federated_data_invariants() -> None:
    fd = FederatedData(name="toy", partitions=[make(), make(4)], test=make(3), num_classes=3)
    assert fd.num_clients == 2
    assert fd.num_train_samples == 10
    assert fd.client_tests is None
    with pytest.raises(DatasetError, match="expected at least one client partition, got none"):
        FederatedData(name="toy", partitions=[], test=make(), num_classes=3)
    with pytest.raises(DatasetError, match=r"expected every part to have num_classes=3, got parts with \[4\]"):
        FederatedData(name="toy", partitions=[make(num_classes=4)], test=make(), num_classes=3)
    with pytest.raises(DatasetError, match=r"expected one client test set per client \(1\), got 2"):
        FederatedData(name="toy", partitions=[make()], test=make(), num_classes=3,
                      client_tests=[make(), make()])


def test_all_is_sorted_and_complete() -> None:
    exported = fedra.data.__all__
    assert list(exported) == sorted(exported, key=lambda n: (not n.isupper(), n))
    public = {n for n in dir(fedra.data) if not n.startswith("_")} - {"annotations"}
    # submodules are private (leading underscore); everything public is exported
    assert public == set(exported)


def test_concrete_types_are_final() -> None:
    for cls in (Dataset, FederatedData):
        assert getattr(cls, "__final__", False), f"{cls.__name__} should be @final"


def test_import_is_numpy_only() -> None:
    # what keeps `import fedra.data` fast is that it loads no heavy library; its time is not asserted
    # here (a loaded machine would fail a timing assert), only the modules that make it slow
    code = (
        "import sys\n"
        "import numpy\n"
        "import fedra.data\n"
        "heavy = sorted(m for m in ('sklearn', 'torch', 'scipy', 'matplotlib', 'pandas', 'sqlalchemy',"
        " 'grpc', 'cryptography') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "none"


def test_loading_digits_does_not_import_sklearn() -> None:
    code = (
        "import sys\n"
        "import fedra.data\n"
        "train, test = fedra.data.load_digits()\n"
        "print(len(train) + len(test), 'sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1797", "False"]
