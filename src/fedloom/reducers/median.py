"""Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates"): each coordinate of the update is the median of the clients' values
at that coordinate; for an even count, the mean of the two middle values (as numpy's and
Flower's `fedmedian`). Unweighted: shard sizes do not enter."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedloom.reducers.base import Reducer, Reduction, check_matrix, register_reducer


def coordinate_median(X: torch.Tensor) -> torch.Tensor:
    """[n, d] -> [d]."""
    check_matrix(X)
    s = X.sort(dim=0).values
    n = X.shape[0]
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


@register_reducer("median")
class Median(Reducer):
    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        n = X.shape[0]
        return Reduction(coordinate_median(X), [1.0 / n] * n)
