"""Tests of the digits loader, the FedProx synthetic generator, and load_federated."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import fedra.data._datasets as datasets_mod
from fedra.data import (
    DATASETS,
    PARTITIONS,
    FederatedData,
    load_digits,
    load_federated,
    stratified_split,
    synthetic_fedprox,
)
from fedra.errors import ConfigError, DatasetError

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


# --- digits ------------------------------------------------------------------------------------------


def test_digits_shape_count_range_and_stratification() -> None:
    train, test = load_digits()
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (64,) and train.x.dtype == np.float32
    assert train.y.dtype == np.int64 and train.num_classes == 10
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert np.all(np.isin(train.x * 16, np.arange(17)))  # pixel counts 0..16, divided by 16
    assert 0.19 < len(test) / 1797 < 0.21
    frac = test.class_counts() / (train.class_counts() + test.class_counts())
    assert np.all(np.abs(frac - 0.2) < 0.02)  # every class ~20% held out
    assert train.name == "digits/train" and test.name == "digits/test"


def test_digits_split_is_fixed_and_configurable() -> None:
    a_train, a_test = load_digits()
    b_train, b_test = load_digits()
    np.testing.assert_array_equal(a_test.x, b_test.x)
    np.testing.assert_array_equal(a_train.y, b_train.y)
    _, small = load_digits(test_fraction=0.1)
    assert 170 < len(small) < 190
    _, other = load_digits(split_seed=1)
    assert not np.array_equal(other.x, a_test.x)
    with pytest.raises(ConfigError, match=r"test_fraction: expected a number strictly between 0 and 1.*got 1\.5"):
        load_digits(test_fraction=1.5)


def test_digits_matches_sklearn_loader() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    sk = sk_load_digits()
    train, test = load_digits()
    ours = np.concatenate([train.x, test.x]) * 16
    theirs = sk.data

    def key(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.lexsort(np.column_stack([x, y]).T)

    ours_y = np.concatenate([train.y, test.y])
    # the same multiset of (image, label) rows
    np.testing.assert_array_equal(ours[key(ours, ours_y)], theirs[key(theirs, sk.target)])


def test_digits_falls_back_to_sklearn_when_the_file_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = datasets_mod._digits_from_sklearn

    def spy() -> np.ndarray:
        calls.append(1)
        return real()

    monkeypatch.setattr(datasets_mod, "_digits_from_sklearn", spy)
    load_digits()
    assert calls == []  # the bundled file is read directly
    monkeypatch.setattr(datasets_mod, "_DIGITS_FILE", Path("no", "such", "file.csv.gz"))
    train, test = load_digits()
    assert calls == [1]
    assert len(train) + len(test) == 1797
    np.testing.assert_array_equal(test.x, load_digits()[1].x)


def test_digits_without_sklearn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes both find_spec and import fail, as if sklearn were not installed.
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetError, match="pip install scikit-learn"):
        load_digits()


def test_stratified_split_partitions_indices() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(labels, test_fraction=0.3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(60))
    np.testing.assert_array_equal(np.bincount(labels[test]), [3, 6, 9])
    with pytest.raises(ConfigError, match="test_fraction: expected a value that leaves both splits non-empty"):
        stratified_split([0, 1], test_fraction=0.2, rng=np.random.default_rng(0))


# --- synthetic ---------------------------------------------------------------------------------------


def test_synthetic_shapes_counts_and_split() -> None:
    fd = synthetic_fedprox(alpha=1.0, beta=1.0, rng=np.random.default_rng(0))
    assert isinstance(fd, FederatedData)
    assert fd.num_clients == 30 and fd.num_classes == 10
    assert fd.client_tests is not None and len(fd.client_tests) == 30
    for train, test in zip(fd.partitions, fd.client_tests, strict=True):
        n = len(train) + len(test)
        assert n >= 50  # lognormal count + 50
        assert len(train) == int(0.9 * n)  # the reference's 90/10 split
        assert train.x.shape == (len(train), 60) and train.x.dtype == np.float32
        assert train.y.dtype == np.int64
    assert len(fd.test) == sum(len(t) for t in fd.client_tests)
    np.testing.assert_array_equal(fd.test.y, np.concatenate([t.y for t in fd.client_tests]))
    sizes = np.array([len(p) + len(t) for p, t in zip(fd.partitions, fd.client_tests, strict=True)])
    assert sizes.std() > 0.5 * sizes.mean()  # lognormal(4, 2): heavy-tailed sizes
    options = synthetic_fedprox(alpha=0.5, beta=0.5, num_users=4, dim=7, num_classes=3,
                                rng=np.random.default_rng(0), test_fraction=0.5)
    assert options.num_clients == 4 and options.partitions[0].x.shape[1] == 7
    assert options.num_classes == 3


def test_synthetic_features_have_the_reference_covariance() -> None:
    # Within a user, x ~ N(v_k, diag(j^-1.2)), j = 1..60: per-feature variances decay as j^-1.2.
    fd = synthetic_fedprox(alpha=0.0, beta=0.0, num_users=5, rng=np.random.default_rng(1))
    big = max(fd.partitions, key=len)
    centred = big.x - big.x.mean(axis=0)
    variance = centred.var(axis=0)
    expected = np.arange(1, 61) ** -1.2
    assert len(big) > 100
    np.testing.assert_allclose(variance[:5], expected[:5], rtol=0.35)
    assert variance[0] > 5 * variance[-1]


def mean_label_entropy(fd: FederatedData) -> float:
    values = []
    for p in fd.partitions:
        q = p.class_counts() / len(p)
        q = q[q > 0]
        values.append(float(-(q * np.log(q)).sum()))
    return float(np.mean(values))


def label_tv_to_pooled(fd: FederatedData) -> float:
    pooled = np.sum([p.class_counts() for p in fd.partitions], axis=0)
    g = pooled / pooled.sum()
    return float(np.mean([0.5 * np.abs(p.class_counts() / len(p) - g).sum() for p in fd.partitions]))


def test_synthetic_iid_users_share_a_distribution_and_noniid_users_do_not() -> None:
    iid_runs = [synthetic_fedprox(alpha=0, beta=0, iid=True, rng=np.random.default_rng(s)) for s in range(3)]
    niid_runs = [synthetic_fedprox(alpha=1, beta=1, rng=np.random.default_rng(s)) for s in range(3)]
    iid_tv = np.mean([label_tv_to_pooled(fd) for fd in iid_runs])
    niid_tv = np.mean([label_tv_to_pooled(fd) for fd in niid_runs])
    assert iid_tv < 0.2 < 0.6 < niid_tv
    # users' distinct label distributions: the most common label differs across non-IID users
    top = {int(np.argmax(p.class_counts())) for p in niid_runs[0].partitions}
    assert len(top) >= 5


def test_synthetic_heterogeneity_grows_with_beta() -> None:
    def spread(beta: float) -> tuple[float, float]:
        runs = [synthetic_fedprox(alpha=0.5, beta=beta, rng=np.random.default_rng(s)) for s in range(6)]
        feature = np.mean([np.std([p.x.mean() for p in fd.partitions]) for fd in runs])
        return float(feature), float(np.mean([mean_label_entropy(fd) for fd in runs]))

    f0, h0 = spread(0.0)
    f1, h1 = spread(1.0)
    f2, h2 = spread(2.0)
    assert f0 < 0.3 < 0.6 < f1 < f2  # std of user feature means ~ sqrt(beta^2 + 1/60)
    assert h2 < h1 < h0  # larger feature shifts push each user's logits to fewer classes


def test_synthetic_alpha_does_not_change_the_data() -> None:
    # u_k shifts every class's logit equally, so with the same stream the labels are identical:
    # a property of the reference generator, documented in fedra.data._synthetic.
    a = synthetic_fedprox(alpha=0.0, beta=1.0, rng=np.random.default_rng(3))
    b = synthetic_fedprox(alpha=3.0, beta=1.0, rng=np.random.default_rng(3))
    for pa, pb in zip(a.partitions, b.partitions, strict=True):
        np.testing.assert_array_equal(pa.x, pb.x)
        assert np.mean(pa.y == pb.y) > 0.999


def test_synthetic_is_deterministic_and_validated() -> None:
    a = synthetic_fedprox(alpha=1, beta=1, rng=np.random.default_rng(9))
    b = synthetic_fedprox(alpha=1, beta=1, rng=np.random.default_rng(9))
    c = synthetic_fedprox(alpha=1, beta=1, rng=np.random.default_rng(10))
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert [len(p) for p in a.partitions] != [len(p) for p in c.partitions]
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"alpha: expected a finite number >= 0 .*got -1"):
        synthetic_fedprox(alpha=-1, beta=0, rng=rng)
    with pytest.raises(ConfigError, match=r"beta: expected a finite number >= 0 .*got nan"):
        synthetic_fedprox(alpha=0, beta=float("nan"), rng=rng)
    with pytest.raises(ConfigError, match=r"num_classes: expected an integer >= 2, got 1"):
        synthetic_fedprox(alpha=0, beta=0, num_classes=1, rng=rng)
    with pytest.raises(ConfigError, match=r"test_fraction: expected a number strictly between 0 and 1"):
        synthetic_fedprox(alpha=0, beta=0, test_fraction=0.0, rng=rng)


# --- load_federated ----------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert sorted(DATASETS) == ["digits", "fashion_mnist", "synthetic"]
    assert sorted(PARTITIONS) == ["dirichlet", "iid", "natural", "shards"]


@pytest.mark.parametrize(("partition", "alpha"), [("iid", None), ("dirichlet", 0.3), ("shards", None)])
def test_load_federated_digits_partitions_the_training_set(partition: str, alpha: float | None) -> None:
    fd = load_federated("digits", num_clients=8, partition=partition, alpha=alpha, seed=4)
    train, test = load_digits()
    assert fd.name == "digits" and fd.num_clients == 8 and fd.num_classes == 10
    assert fd.num_train_samples == len(train)
    np.testing.assert_array_equal(fd.test.x, test.x)
    # the partitions hold exactly the training samples: compare sorted label counts and pixel sums
    np.testing.assert_array_equal(sum(p.class_counts() for p in fd.partitions), train.class_counts())
    assert np.isclose(sum(float(p.x.sum()) for p in fd.partitions), float(train.x.sum()))
    assert fd.partitions[3].name == "digits/client0003"
    if partition == "shards":
        assert max(int(np.count_nonzero(p.class_counts())) for p in fd.partitions) <= 4


def test_load_federated_same_seed_same_partitions() -> None:
    for kwargs in ({"partition": "dirichlet", "alpha": 0.5}, {"partition": "iid"}, {"partition": "shards"}):
        a = load_federated("digits", num_clients=10, seed=7, **kwargs)
        b = load_federated("digits", num_clients=10, seed=7, **kwargs)
        c = load_federated("digits", num_clients=10, seed=8, **kwargs)
        for pa, pb in zip(a.partitions, b.partitions, strict=True):
            np.testing.assert_array_equal(pa.x, pb.x)
            np.testing.assert_array_equal(pa.y, pb.y)
        assert any(
            len(pa) != len(pc) or not np.array_equal(pa.y, pc.y)
            for pa, pc in zip(a.partitions, c.partitions, strict=True)
        )
        np.testing.assert_array_equal(a.test.y, c.test.y)  # the test set ignores the seed


def test_load_federated_synthetic() -> None:
    fd = load_federated("synthetic", num_clients=12, partition="natural", seed=3,
                        synthetic_alpha=0.5, synthetic_beta=0.5)
    assert fd.name == "synthetic" and fd.num_clients == 12
    again = load_federated("synthetic", num_clients=12, partition="natural", seed=3,
                           synthetic_alpha=0.5, synthetic_beta=0.5)
    np.testing.assert_array_equal(fd.partitions[5].x, again.partitions[5].x)
    direct = synthetic_fedprox(alpha=0.5, beta=0.5, num_users=12, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(fd.test.y, direct.test.y)
    iid = load_federated("synthetic", num_clients=12, partition="natural", synthetic_iid=True)
    assert label_tv_to_pooled(iid) < label_tv_to_pooled(fd)


@pytest.mark.skipif(not REAL_FASHION, reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_load_federated_fashion_mnist() -> None:
    fd = load_federated("fashion_mnist", num_clients=20, partition="shards", seed=0, test_fraction=0.2)
    assert fd.num_train_samples == 60_000 and len(fd.test) == 10_000
    assert max(int(np.count_nonzero(p.class_counts())) for p in fd.partitions) <= 2


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("mnist", {"partition": "iid"}, r"dataset: expected one of digits, fashion_mnist, synthetic, got 'mnist'"),
        ("digits", {"partition": "pathological"}, r"partition: expected one of dirichlet, iid, natural, shards, got 'pathological'"),
        ("digits", {"partition": "natural"}, r"'digits' has no natural per-user split; expected one of dirichlet, iid, shards"),
        ("fashion_mnist", {"partition": "natural"}, r"'fashion_mnist' has no natural per-user split"),
        ("digits", {"partition": "dirichlet"}, r"alpha: expected a Dirichlet concentration > 0 with partition='dirichlet'.*got None"),
        ("digits", {"partition": "iid", "alpha": 0.5}, r"alpha: applies only to partition='dirichlet', got alpha=0.5 with partition='iid'"),
        ("digits", {"partition": "dirichlet", "alpha": -2.0}, r"alpha: expected a finite Dirichlet concentration > 0"),
        ("digits", {"partition": "iid", "path": "/tmp"}, r"path: dataset 'digits' reads no files"),
        ("digits", {"partition": "iid", "synthetic_alpha": 1.0}, r"params: dataset 'digits' takes none as extra parameters, got synthetic_alpha"),
        ("synthetic", {"partition": "iid"}, r"only split is 'natural'; expected partition='natural', got 'iid'"),
        ("synthetic", {"partition": "natural", "synthetic_gamma": 1}, r"takes only synthetic_alpha, synthetic_beta, synthetic_iid as extra parameters, got synthetic_gamma"),
        ("synthetic", {"partition": "natural", "synthetic_beta": "big"}, r"synthetic_beta: expected a number >= 0, got 'big'"),
        ("digits", {"partition": "iid", "seed": -1}, r"seed: expected a non-negative integer, got -1"),
        ("digits", {"partition": "iid", "num_clients": 0}, r"num_clients: expected an integer >= 1, got 0"),
        ("digits", {"partition": "iid", "num_clients": 5000}, r"num_clients: expected at most one client per sample \(1,438\), got 5,000"),
    ],
)
def test_load_federated_rejects_bad_arguments(name: str, kwargs: dict[str, object], fragment: str) -> None:
    kwargs.setdefault("num_clients", 10)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_federated(name, **kwargs)  # type: ignore[arg-type]
    assert info.value.exit_code == 78


def test_load_federated_missing_fashion_mnist(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_federated("fashion_mnist", num_clients=2, partition="iid", path=tmp_path)
