"""Tests of the partitioners: coverage and determinism properties, skew, and argument validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedra.data import DEFAULT_MAX_ATTEMPTS, dirichlet, iid, natural, shards
from fedra.errors import ConfigError

SETTINGS = settings(max_examples=60, deadline=None)


def assert_exact_cover(parts: list[np.ndarray], num_samples: int, num_clients: int) -> None:
    """Every index 0..num_samples-1 appears in exactly one part; parts sorted, int64."""
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert part.ndim == 1
        assert np.all(np.diff(part) > 0), "each part must be sorted with no repeats"
    joined = np.concatenate(parts)
    assert joined.size == num_samples
    np.testing.assert_array_equal(np.sort(joined), np.arange(num_samples))


@st.composite
def labelled(draw: st.DrawFn, max_samples: int = 300) -> tuple[np.ndarray, int]:
    """Random labels and a client count no larger than the sample count."""
    n = draw(st.integers(1, max_samples))
    num_classes = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    labels = np.random.default_rng(seed).integers(0, num_classes, n)
    clients = draw(st.integers(1, min(n, 25)))
    return labels, clients


# --- iid ---------------------------------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(1, 5000), data=st.data())
def test_iid_covers_every_index_once_with_balanced_sizes(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, min(n, 200)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    parts = iid(n, num_clients=k, rng=np.random.default_rng(seed))
    assert_exact_cover(parts, n, k)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_deterministic_by_seed_and_random_across_seeds() -> None:
    a = iid(1000, num_clients=7, rng=np.random.default_rng(3))
    b = iid(1000, num_clients=7, rng=np.random.default_rng(3))
    c = iid(1000, num_clients=7, rng=np.random.default_rng(4))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))
    # shuffled, not contiguous blocks
    assert not np.array_equal(a[0], np.arange(len(a[0])))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_samples": 5, "num_clients": 6}, "num_clients: expected at most one client per sample (5), got 6"),
        ({"num_samples": 5, "num_clients": 0}, "num_clients: expected an integer >= 1, got 0"),
        ({"num_samples": 0, "num_clients": 1}, "num_samples: expected an integer >= 1, got 0"),
        ({"num_samples": 5, "num_clients": 2.0}, "num_clients: expected an integer >= 1, got 2.0"),
        ({"num_samples": 5, "num_clients": True}, "num_clients: expected an integer >= 1, got True"),
    ],
)
def test_iid_rejects_bad_arguments(kwargs: dict[str, object], fragment: str) -> None:
    n = kwargs.pop("num_samples")
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        iid(n, rng=np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]


def test_partitioners_reject_a_legacy_random_state() -> None:
    with pytest.raises(ConfigError, match=r"rng: expected a numpy\.random\.Generator.*got RandomState"):
        iid(10, num_clients=2, rng=np.random.RandomState(0))  # type: ignore[arg-type]


# --- dirichlet ---------------------------------------------------------------------------------------


@SETTINGS
@given(case=labelled(), alpha=st.floats(0.05, 1000.0), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_covers_every_index_once(case: tuple[np.ndarray, int], alpha: float, seed: int) -> None:
    labels, k = case
    parts = dirichlet(labels, num_clients=k, alpha=alpha, rng=np.random.default_rng(seed), min_size=0)
    assert_exact_cover(parts, len(labels), k)


@SETTINGS
@given(case=labelled(), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_honours_min_size(case: tuple[np.ndarray, int], seed: int) -> None:
    labels, k = case
    min_size = len(labels) // (4 * k)
    parts = dirichlet(labels, num_clients=k, alpha=5.0, rng=np.random.default_rng(seed),
                      min_size=min_size)
    assert_exact_cover(parts, len(labels), k)
    assert min(len(p) for p in parts) >= min_size


def test_dirichlet_is_deterministic_by_seed() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 2000)
    a = dirichlet(labels, num_clients=20, alpha=0.3, rng=np.random.default_rng(11))
    b = dirichlet(labels, num_clients=20, alpha=0.3, rng=np.random.default_rng(11))
    c = dirichlet(labels, num_clients=20, alpha=0.3, rng=np.random.default_rng(12))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    """Mean over clients of the Shannon entropy (nats) of the client's label distribution."""
    entropies = []
    for p in parts:
        q = np.bincount(labels[p], minlength=num_classes) / len(p)
        q = q[q > 0]
        entropies.append(float(-(q * np.log(q)).sum()))
    return float(np.mean(entropies))


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10), 500)
    entropy = {}
    for alpha in (0.05, 0.5, 100.0):
        runs = [
            mean_label_entropy(
                labels,
                dirichlet(labels, num_clients=20, alpha=alpha, rng=np.random.default_rng(seed)),
                10,
            )
            for seed in range(5)
        ]
        entropy[alpha] = float(np.mean(runs))
    assert entropy[0.05] < entropy[0.5] < entropy[100.0]
    assert entropy[100.0] > 0.95 * np.log(10)  # near uniform: near IID
    assert entropy[0.05] < 0.5 * np.log(10)  # most clients see a few classes


def test_dirichlet_gives_up_with_a_clear_error_when_min_size_is_unreachable() -> None:
    labels = np.zeros(100, dtype=np.int64)  # one class: each client needs a big Dir share
    with pytest.raises(ConfigError, match=r"min_size=10 .*in 5 draws of Dir\(alpha=0\.01\).*raise alpha"):
        dirichlet(labels, num_clients=10, alpha=0.01, rng=np.random.default_rng(0), min_size=10,
                  max_attempts=5)
    assert DEFAULT_MAX_ATTEMPTS >= 100


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_dirichlet_rejects_nonpositive_alpha(alpha: object) -> None:
    with pytest.raises(ConfigError, match=r"alpha: expected a finite Dirichlet concentration > 0.*got"):
        dirichlet([0, 1, 0, 1], num_clients=2, alpha=alpha, rng=np.random.default_rng(0))  # type: ignore[arg-type]


def test_dirichlet_rejects_impossible_min_size_and_bad_labels() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"min_size: expected num_clients \* min_size <= number of samples \(4\), got 3 \* 2 = 6"):
        dirichlet([0, 1, 0, 1], num_clients=3, alpha=1.0, rng=rng, min_size=2)
    with pytest.raises(ConfigError, match="labels: expected a non-empty 1-D integer array"):
        dirichlet([0.5, 1.0], num_clients=1, alpha=1.0, rng=rng)
    with pytest.raises(ConfigError, match="labels: expected a non-empty 1-D integer array"):
        dirichlet(np.zeros((2, 2), dtype=int), num_clients=1, alpha=1.0, rng=rng)
    with pytest.raises(ConfigError, match=r"num_clients: expected at most one client per sample \(2\), got 3"):
        dirichlet([0, 1], num_clients=3, alpha=1.0, rng=rng, min_size=0)


# --- shards ------------------------------------------------------------------------------------------


@SETTINGS
@given(case=labelled(), spc=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_shards_cover_every_index_once(case: tuple[np.ndarray, int], spc: int, seed: int) -> None:
    labels, k = case
    spc = min(spc, len(labels))
    k = max(1, min(k, len(labels) // spc))
    parts = shards(labels, num_clients=k, shards_per_client=spc, rng=np.random.default_rng(seed))
    assert_exact_cover(parts, len(labels), k)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= spc  # shards differ by at most one sample


def test_shards_aligned_with_classes_give_each_client_two_labels() -> None:
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 100))
    for seed in range(10):
        parts = shards(labels, num_clients=5, shards_per_client=2, rng=np.random.default_rng(seed))
        assert_exact_cover(parts, 1000, 5)
        for p in parts:
            present, counts = np.unique(labels[p], return_counts=True)
            assert len(present) <= 2
            assert set(counts.tolist()) <= {100, 200}  # whole classes only
        seen = np.concatenate([np.unique(labels[p]) for p in parts])
        assert sorted(set(seen.tolist())) == list(range(10))


def test_shards_are_far_more_skewed_than_iid() -> None:
    labels = np.repeat(np.arange(10), 600)
    rng = np.random.default_rng(1)
    sharded = shards(labels, num_clients=100, rng=rng)
    spread = iid(len(labels), num_clients=100, rng=rng)
    assert max(len(np.unique(labels[p])) for p in sharded) <= 2
    assert mean_label_entropy(labels, sharded, 10) < 0.5 * mean_label_entropy(labels, spread, 10)


def test_shards_deterministic_and_validated() -> None:
    labels = np.repeat(np.arange(4), 25)
    a = shards(labels, num_clients=10, rng=np.random.default_rng(5))
    b = shards(labels, num_clients=10, rng=np.random.default_rng(5))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ConfigError, match=r"shards_per_client: expected num_clients \* shards_per_client <= number of samples \(100\), got 30 \* 4 = 120"):
        shards(labels, num_clients=30, shards_per_client=4, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="shards_per_client: expected an integer >= 1, got 0"):
        shards(labels, num_clients=3, shards_per_client=0, rng=np.random.default_rng(0))


# --- natural -----------------------------------------------------------------------------------------


def test_natural_gives_one_client_per_group_in_sorted_group_order() -> None:
    groups = np.array([7, 3, 7, 9, 3, 3, 7])
    parts = natural(groups)
    assert_exact_cover(parts, 7, 3)
    np.testing.assert_array_equal(parts[0], [1, 4, 5])  # group 3
    np.testing.assert_array_equal(parts[1], [0, 2, 6])  # group 7
    np.testing.assert_array_equal(parts[2], [3])  # group 9


def test_natural_accepts_string_ids() -> None:
    parts = natural(["bob", "alice", "bob", "carol"])
    assert [p.tolist() for p in parts] == [[1], [0, 2], [3]]


@SETTINGS
@given(groups=st.lists(st.integers(-5, 40), min_size=1, max_size=200))
def test_natural_property(groups: list[int]) -> None:
    g = np.array(groups)
    parts = natural(g)
    ids = sorted(set(groups))
    assert_exact_cover(parts, len(groups), len(ids))
    for gid, part in zip(ids, parts, strict=True):
        assert np.all(g[part] == gid)


def test_natural_rejects_empty_or_2d() -> None:
    with pytest.raises(ConfigError, match=r"groups: expected a non-empty 1-D array.*got shape \(0,\)"):
        natural([])
    with pytest.raises(ConfigError, match=r"got shape \(2, 2\)"):
        natural([[1, 2], [3, 4]])
