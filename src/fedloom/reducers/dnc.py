"""Divide-and-Conquer (Shejwalkar & Houmansadr 2021, "Manipulating the Byzantine: Optimizing
Model Poisoning Attacks and Defenses for Federated Learning"), Algorithm 2.

    repeat `iters` times:
        r  ← `subsample` random coordinates (a seeded generator per round and iteration)
        Xr ← X[:, r] − mean(X[:, r])                 [n, b]
        v  ← top right singular vector of Xr         [b]
        s_i ← (Xr_i · v)²                            outlier score
        keep the n − c·f updates with the lowest scores
    good ← the updates kept in every iteration
    Δ = (shard-size weighted) mean of the good updates
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedloom.algorithms.aggregate import AggregationError, normalized_weights
from fedloom.reducers.base import (
    Reducer,
    ReducerConfig,
    Reduction,
    check_matrix,
    register_reducer,
)


def dnc_scores(Xr: torch.Tensor) -> torch.Tensor:
    """[n, b] -> [n]: squared projection of each centred row on the top singular vector."""
    check_matrix(Xr)
    centred = Xr.to(torch.float64) - Xr.to(torch.float64).mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]) ** 2


def dnc_keep(
    X: torch.Tensor, f: int, subsample: int, iters: int, c: float, gen: torch.Generator
) -> list[int]:
    """Positions of the updates DnC keeps."""
    check_matrix(X)
    n, d = X.shape
    drop = int(c * f)
    if f < 0 or drop >= n:
        raise AggregationError(
            f"DnC drops c·f = {drop} of {n} updates each iteration, leaving none: lower `f` or "
            "`c`, or sample more clients per round"
        )
    good = set(range(n))
    for _ in range(iters):
        cols = torch.randperm(d, generator=gen)[: min(subsample, d)]
        scores = dnc_scores(X[:, cols])
        kept = torch.argsort(scores, stable=True)[: n - drop]
        good &= {int(i) for i in kept}
    return sorted(good)


@dataclass
class DnCConfig(ReducerConfig):
    f: int = 1
    """Updates assumed malicious per round."""
    subsample: int = 10000
    """Coordinates sampled per iteration."""
    iters: int = 1
    c: float = 1.0
    """Filtering fraction: c·f updates dropped per iteration."""
    seed: int | None = None
    """Seeds the coordinate sampling (with the round number); None: the run's seed."""

    def __post_init__(self) -> None:
        if self.f < 0 or self.subsample < 1 or self.iters < 1 or self.c <= 0:
            raise ValueError(
                f"DnC needs f >= 0, subsample >= 1, iters >= 1, c > 0 (got f={self.f}, "
                f"subsample={self.subsample}, iters={self.iters}, c={self.c})"
            )

    def min_clients(self) -> int:
        return int(self.c * self.f) + 1


@register_reducer("dnc")
class DnC(Reducer):
    config_cls = DnCConfig
    cfg: DnCConfig

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        seed = self.seed if self.cfg.seed is None else self.cfg.seed
        gen = torch.Generator().manual_seed(seed * 1_000_003 + rnd)
        p = self.cfg
        good = dnc_keep(X, p.f, p.subsample, p.iters, p.c, gen)
        share = normalized_weights([weights[i] for i in good])
        w = torch.tensor(share, dtype=torch.float64)
        update = (w @ X[good].to(torch.float64)).to(X.dtype)
        full = [0.0] * X.shape[0]
        for i, s in zip(good, share, strict=True):
            full[i] = s
        return Reduction(update, full, {"selected": [int(client_ids[i]) for i in good]})
