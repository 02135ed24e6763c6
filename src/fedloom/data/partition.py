"""Partitioners: split example indices across clients. One registry; unknown names are errors.

Each partitioner takes the examples' labels (the value of a metadata key, or None for iid), the
number of clients, a seed, the Dirichlet alpha, a minimum size and the size spread (``size_cv``,
for ``quantity``), and returns one sorted list of indices per client.
No partitioner ever returns an empty client: it raises :class:`PartitionError` instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from fedloom.errors import FedloomError
from fedloom.utils import rng_for


class PartitionError(FedloomError, ValueError):
    """A split cannot be made as asked (unknown strategy, too few examples, ...)."""


class Partitioner(Protocol):
    def __call__(
        self,
        labels: Sequence[Any],
        num_clients: int | None,
        seed: int,
        alpha: float,
        min_examples: int,
        size_cv: float = 1.0,
    ) -> list[list[int]]: ...


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
    labels: Sequence[Any],
    num_clients: int | None,
    seed: int,
    alpha: float,
    min_examples: int,
    size_cv: float = 1.0,
) -> list[list[int]]:
    """Shuffle, then deal into ``num_clients`` near-equal shards."""
    assert num_clients is not None
    idx = list(range(len(labels)))
    rng_for(seed, "partition", "iid").shuffle(idx)
    return _check_min([idx[c::num_clients] for c in range(num_clients)], min_examples, "iid split")


@register_partitioner("dirichlet")
def dirichlet(
    labels: Sequence[Any],
    num_clients: int | None,
    seed: int,
    alpha: float,
    min_examples: int,
    size_cv: float = 1.0,
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
    labels: Sequence[Any],
    num_clients: int | None,
    seed: int,
    alpha: float,
    min_examples: int,
    size_cv: float = 1.0,
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


def _deal(weights: np.ndarray, spare: int, min_size: int) -> np.ndarray:
    """``spare`` items dealt in proportion to ``weights`` (largest remainder), plus the floor."""
    share = weights / weights.sum() * spare
    sizes = np.floor(share).astype(int)
    order = np.argsort(-(share - sizes), kind="stable")
    sizes[order[: spare - int(sizes.sum())]] += 1
    return sizes + min_size


def lognormal_sizes(
    total: int, num_clients: int, cv: float, min_size: int, rng: np.random.Generator
) -> list[int]:
    """Client sizes that sum to ``total``, each >= ``min_size``, log-normal in shape
    (``exp(σ·z)`` with z standard normal draws) and with σ chosen by bisection so that the sizes'
    own coefficient of variation (sd/mean, sample sd) is ``cv``: the split's mean ± sd is the
    asked one, not just its expectation. ``cv = 0`` gives equal sizes."""
    if num_clients * min_size > total:
        raise PartitionError(
            f"quantity split: {num_clients} clients x `partition.min_examples` {min_size} needs "
            f"{num_clients * min_size} examples, there are {total}; use fewer clients"
        )
    spare = total - num_clients * min_size
    z = rng.standard_normal(num_clients)
    if cv <= 0 or num_clients == 1:
        return [int(s) for s in _deal(np.ones(num_clients), spare, min_size)]

    def spread(sigma: float) -> float:
        sizes = _deal(np.exp(sigma * (z - z.max())), spare, min_size)
        return float(sizes.std(ddof=1) / sizes.mean())

    lo, hi = 0.0, 8.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spread(mid) < cv else (lo, mid)
    return [int(s) for s in _deal(np.exp(hi * (z - z.max())), spare, min_size)]


@register_partitioner("quantity")
def quantity(
    labels: Sequence[Any],
    num_clients: int | None,
    seed: int,
    alpha: float,
    min_examples: int,
    size_cv: float = 1.0,
) -> list[list[int]]:
    """Quantity skew: heavy-tailed pseudo-users. Client sizes are log-normal with
    ``size_cv`` = sd/mean (FedLLM-Bench's Fed-ChatbotIT: 26±33, cv 1.27); examples are shuffled
    and dealt in those sizes (no label skew)."""
    assert num_clients is not None
    gen = np.random.default_rng(np.random.SeedSequence([seed, 0x51]))
    sizes = lognormal_sizes(len(labels), num_clients, size_cv, min_examples, gen)
    idx = list(range(len(labels)))
    rng_for(seed, "partition", "quantity").shuffle(idx)
    bounds = np.cumsum([0, *sizes])
    return [sorted(idx[bounds[c] : bounds[c + 1]]) for c in range(num_clients)]


def partition(
    strategy: str,
    metadata: Sequence[dict[str, Any]],
    num_clients: int | None,
    *,
    key: str = "domain",
    seed: int = 0,
    alpha: float = 0.5,
    min_examples: int = 1,
    size_cv: float = 1.0,
) -> list[list[int]]:
    if strategy not in PARTITIONERS:
        raise PartitionError(
            f"unknown partition strategy {strategy!r}; choose one of {sorted(PARTITIONERS)}"
        )
    if strategy in ("iid", "quantity"):  # label-free splits
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
    return PARTITIONERS[strategy](labels, num_clients, seed, alpha, min_examples, size_cv)
