"""Partitioners: split example indices across clients. One registry; unknown names are errors.

Each partitioner takes the examples' labels (the value of a metadata key, or None for iid), the
number of clients, a seed and a minimum size, and returns one sorted list of indices per client.
No partitioner ever returns an empty client: it raises :class:`PartitionError` instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedloom.errors import FedloomError
from fedloom.utils import rng_for


class PartitionError(FedloomError, ValueError):
    """A split cannot be made as asked (unknown strategy, too few examples, ...)."""


Partitioner = Callable[[Sequence[Any], int | None, int, float, int], list[list[int]]]
PARTITIONERS: dict[str, Partitioner] = {}


def register_partitioner(name: str) -> Callable[[Partitioner], Partitioner]:
    def deco(fn: Partitioner) -> Partitioner:
        if name in PARTITIONERS:
            raise ValueError(f"partitioner {name!r} is already registered")
        PARTITIONERS[name] = fn
        return fn

    return deco


def _check_min(parts: list[list[int]], min_examples: int, what: str) -> list[list[int]]:
    small = [(i, len(p)) for i, p in enumerate(parts) if len(p) < min_examples]
    if small:
        raise PartitionError(
            f"{what}: client {small[0][0]} gets {small[0][1]} examples, fewer than "
            f"`partition.min_examples` ({min_examples}); use fewer clients, more data or a larger alpha"
        )
    return [sorted(p) for p in parts]


@register_partitioner("iid")
def iid(
    labels: Sequence[Any], num_clients: int | None, seed: int, alpha: float, min_examples: int
) -> list[list[int]]:
    """Shuffle, then deal into ``num_clients`` near-equal shards."""
    assert num_clients is not None
    idx = list(range(len(labels)))
    rng_for(seed, "partition", "iid").shuffle(idx)
    return _check_min([idx[c::num_clients] for c in range(num_clients)], min_examples, "iid split")


@register_partitioner("dirichlet")
def dirichlet(
    labels: Sequence[Any], num_clients: int | None, seed: int, alpha: float, min_examples: int
) -> list[list[int]]:
    """Label-skew split (Hsu et al. 2019): for each label value, client shares ~ Dir(alpha).

    Small ``alpha`` gives each client few labels; large ``alpha`` approaches iid. Draws are
    repeated (up to 100 times) until every client holds ``min_examples``.
    """
    assert num_clients is not None
    by_label: dict[Any, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        by_label[lab].append(i)
    gen = np.random.default_rng(np.random.SeedSequence([seed, 0xD1]))
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for lab in sorted(by_label, key=str):
            idx = np.array(by_label[lab])
            gen.shuffle(idx)
            shares = gen.dirichlet([alpha] * num_clients)
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for c, chunk in enumerate(np.split(idx, cuts)):
                parts[c].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_examples:
            return [sorted(p) for p in parts]
    return _check_min(parts, min_examples, f"dirichlet split (alpha={alpha}, after 100 draws)")


@register_partitioner("natural")
def natural(
    labels: Sequence[Any], num_clients: int | None, seed: int, alpha: float, min_examples: int
) -> list[list[int]]:
    """One client per distinct label value (sorted by value), e.g. one client per domain."""
    by_label: dict[Any, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        by_label[lab].append(i)
    values = sorted(by_label, key=str)
    if num_clients is not None and num_clients != len(values):
        raise PartitionError(
            f"natural split: `partition.num_clients` is {num_clients} but the key has "
            f"{len(values)} values {values[:10]}; leave num_clients empty or set it to {len(values)}"
        )
    return _check_min([by_label[v] for v in values], min_examples, "natural split")


def partition(
    strategy: str,
    metadata: Sequence[dict[str, Any]],
    num_clients: int | None,
    *,
    key: str = "domain",
    seed: int = 0,
    alpha: float = 0.5,
    min_examples: int = 1,
) -> list[list[int]]:
    if strategy not in PARTITIONERS:
        raise PartitionError(
            f"unknown partition strategy {strategy!r}; choose one of {sorted(PARTITIONERS)}"
        )
    if strategy == "iid":
        labels: list[Any] = [None] * len(metadata)
    else:
        missing = [i for i, m in enumerate(metadata) if key not in m]
        if missing:
            raise PartitionError(
                f"{strategy} split over `{key}`: example {missing[0]} has no metadata key {key!r} "
                f"(it has {sorted(metadata[missing[0]])})"
            )
        labels = [m[key] for m in metadata]
    if num_clients is not None and num_clients > len(labels):
        raise PartitionError(f"{num_clients} clients but only {len(labels)} training examples")
    return PARTITIONERS[strategy](labels, num_clients, seed, alpha, min_examples)
