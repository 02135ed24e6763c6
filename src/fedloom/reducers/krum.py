"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent").

    score_i = Σ_{j ∈ N_i} ‖Δ_i − Δ_j‖²     N_i: the n − f − 2 updates closest to Δ_i (j ≠ i)
    Krum:        the update with the lowest score
    Multi-Krum:  the (shard-size weighted) mean of the m lowest-scoring updates (m = n − f
                 by default, as the safety paper's baseline)
Ties go to the lower client position (a stable sort). A score needs at least one neighbour,
so n >= f + 3; Blanchard's guarantee needs n > 2f + 2, recorded as ``info.guarantee``.
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


def krum_scores(X: torch.Tensor, f: int) -> torch.Tensor:
    """[n, d] -> [n] Krum scores (fp64)."""
    check_matrix(X)
    n = X.shape[0]
    if f < 0 or n < f + 3:
        raise AggregationError(
            f"Krum with f = {f} needs at least f + 3 = {f + 3} updates, got {n}: lower `f` or "
            "sample more clients per round"
        )
    Xd = X.to(torch.float64)
    d2 = torch.cdist(Xd, Xd) ** 2  # [n, n]
    d2.fill_diagonal_(float("inf"))
    nearest = d2.sort(dim=1).values[:, : n - f - 2]  # [n, n-f-2]
    return nearest.sum(dim=1)


def multi_krum(
    X: torch.Tensor, weights: Sequence[float], f: int, m: int | None = None
) -> tuple[torch.Tensor, list[int]]:
    """The mean of the ``m`` best-scored updates and their positions (m = 1: Krum)."""
    check_matrix(X, weights)
    n = X.shape[0]
    m = n - f if m is None else m
    if not 1 <= m <= n - f:
        raise AggregationError(f"Multi-Krum selects m in [1, n − f] = [1, {n - f}], got m = {m}")
    scores = krum_scores(X, f)
    chosen = sorted(int(i) for i in torch.argsort(scores, stable=True)[:m])
    w = torch.tensor(normalized_weights([weights[i] for i in chosen]), dtype=torch.float64)
    return (w @ X[chosen].to(torch.float64)).to(X.dtype), chosen


@dataclass
class KrumConfig(ReducerConfig):
    f: int = 1
    """Updates assumed Byzantine per round."""
    m: int | None = None
    """Multi-Krum: updates averaged (None: n − f). Krum fixes m = 1."""

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ValueError(f"`f` must be >= 0 (got {self.f})")
        if self.m is not None and self.m < 1:
            raise ValueError(f"`m` must be >= 1 (got {self.m})")

    def min_clients(self) -> int:
        return self.f + 3


class _KrumBase(Reducer):
    config_cls = KrumConfig
    cfg: KrumConfig

    def selection(self, n: int) -> int | None:
        return self.cfg.m

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        n = X.shape[0]
        update, chosen = multi_krum(X, weights, self.cfg.f, self.selection(n))
        share = normalized_weights([weights[i] for i in chosen])
        w = [0.0] * n
        for i, s in zip(chosen, share, strict=True):
            w[i] = s
        info = {
            "selected": [int(client_ids[i]) for i in chosen],
            "guarantee": n > 2 * self.cfg.f + 2,
        }
        return Reduction(update, w, info)


@register_reducer("krum")
class Krum(_KrumBase):
    def selection(self, n: int) -> int | None:
        if self.cfg.m not in (None, 1):
            raise AggregationError("Krum selects one update; for m > 1 use `multikrum`")
        return 1


@register_reducer("multikrum")
class MultiKrum(_KrumBase):
    pass
