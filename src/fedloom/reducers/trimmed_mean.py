"""Coordinate-wise trimmed mean (Yin et al. 2018): at each coordinate drop the ⌊β·n⌋ largest
and the ⌊β·n⌋ smallest client values and average the rest. Unweighted. β = 0 is the plain
(unweighted) mean; β must leave at least one value (2·⌊β·n⌋ < n)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedloom.algorithms.aggregate import AggregationError
from fedloom.reducers.base import (
    Reducer,
    ReducerConfig,
    Reduction,
    check_matrix,
    register_reducer,
)


def trimmed_mean(X: torch.Tensor, beta: float) -> torch.Tensor:
    """[n, d] -> [d]."""
    check_matrix(X)
    n = X.shape[0]
    k = int(beta * n)
    if not 0 <= beta < 0.5 or 2 * k >= n:
        raise AggregationError(
            f"trimmed mean with beta = {beta} drops {k} of {n} updates at each end, leaving "
            f"none: use beta in [0, 0.5) with 2·floor(beta·n) < n"
        )
    s = X.sort(dim=0).values
    return s[k : n - k].mean(dim=0)


@dataclass
class TrimmedMeanConfig(ReducerConfig):
    beta: float = 0.2
    """Share trimmed at each end of every coordinate."""

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ValueError(f"`beta` must be in [0, 0.5) (got {self.beta})")


@register_reducer("trimmed_mean")
class TrimmedMean(Reducer):
    config_cls = TrimmedMeanConfig
    cfg: TrimmedMeanConfig

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        n = X.shape[0]
        k = int(self.cfg.beta * n)
        return Reduction(trimmed_mean(X, self.cfg.beta), [1.0 / n] * n, {"trimmed_each_end": k})
