"""The plain weighted mean (FedAvg's aggregate):  Δ = Σ_i w_i Δ_i / Σ_i w_i."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedloom.algorithms.aggregate import normalized_weights
from fedloom.reducers.base import Reducer, Reduction, check_matrix, register_reducer


def weighted_mean(X: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """[n, d] -> [d]; weights >= 0 with a positive sum (computed in fp64)."""
    check_matrix(X, weights)
    w = torch.tensor(normalized_weights(weights), dtype=torch.float64)
    return (w @ X.to(torch.float64)).to(X.dtype)


@register_reducer("mean")
class Mean(Reducer):
    robust = False

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        return Reduction(weighted_mean(X, weights), normalized_weights(weights))
