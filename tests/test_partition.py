from __future__ import annotations

import pytest

from fedloom.data.partition import PartitionError, partition


def meta(n_a: int, n_b: int, n_c: int = 0) -> list[dict[str, str]]:
    return [{"domain": "a"}] * n_a + [{"domain": "b"}] * n_b + [{"domain": "c"}] * n_c


def test_iid_sizes_cover_everything_once() -> None:
    parts = partition("iid", meta(50, 53), 4, seed=1)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert sorted(i for p in parts for i in p) == list(range(103))


def test_deterministic_by_seed() -> None:
    for strategy in ("iid", "dirichlet"):
        a = partition(strategy, meta(60, 60, 60), 5, seed=7, alpha=0.5)
        b = partition(strategy, meta(60, 60, 60), 5, seed=7, alpha=0.5)
        c = partition(strategy, meta(60, 60, 60), 5, seed=8, alpha=0.5)
        assert a == b and a != c


def _skew(parts: list[list[int]], labels: list[dict[str, str]]) -> float:
    """Mean over clients of the largest label share (1.0 = each client holds one label)."""
    shares = []
    for p in parts:
        counts: dict[str, int] = {}
        for i in p:
            counts[labels[i]["domain"]] = counts.get(labels[i]["domain"], 0) + 1
        shares.append(max(counts.values()) / len(p))
    return sum(shares) / len(shares)


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = meta(300, 300, 300)
    skews = [
        sum(_skew(partition("dirichlet", labels, 6, seed=s, alpha=a), labels) for s in range(5)) / 5
        for a in (100.0, 1.0, 0.05)
    ]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.45 and skews[2] > 0.8


def test_dirichlet_respects_min_examples() -> None:
    parts = partition("dirichlet", meta(100, 100), 4, seed=0, alpha=0.3, min_examples=10)
    assert min(len(p) for p in parts) >= 10
    assert sorted(i for p in parts for i in p) == list(range(200))


def test_natural_one_client_per_value() -> None:
    parts = partition("natural", meta(3, 5, 2), None)
    assert parts == [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9]]


def test_errors_are_clear() -> None:
    with pytest.raises(PartitionError, match="unknown partition strategy 'shards'"):
        partition("shards", meta(5, 5), 2)
    with pytest.raises(PartitionError, match="num_clients` is 2 but the key has 3 values"):
        partition("natural", meta(2, 2, 2), 2)
    with pytest.raises(PartitionError, match="fewer than `partition.min_examples`"):
        partition("iid", meta(5, 5), 5, min_examples=3)
    with pytest.raises(PartitionError, match="no metadata key 'lang'"):
        partition("natural", meta(2, 2), None, key="lang")
    with pytest.raises(PartitionError, match="only 4 training examples"):
        partition("iid", meta(2, 2), 5)
