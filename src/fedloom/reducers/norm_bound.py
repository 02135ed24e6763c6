"""Norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated Learning?"): every
update is scaled down to L2 norm at most M, then the (shard-size weighted) mean is taken:

    Δ = Σ_i w_i · Δ_i · min(1, M / ‖Δ_i‖) / Σ_i w_i
M = `max_norm`, or, when unset, the median of this round's update norms (adapter updates have
no natural scale, so a fixed M must be tuned per model and learning rate)."""

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
from fedloom.reducers.median import coordinate_median


def norm_bounded_mean(
    X: torch.Tensor, weights: Sequence[float], max_norm: float
) -> tuple[torch.Tensor, list[float]]:
    """The mean of the clipped updates and each update's scale factor."""
    check_matrix(X, weights)
    if not max_norm > 0:
        raise AggregationError(f"norm bound must be > 0, got {max_norm}")
    norms = X.to(torch.float64).norm(dim=1)
    scale = torch.clamp(max_norm / norms.clamp_min(1e-30), max=1.0)  # [n]
    w = torch.tensor(normalized_weights(weights), dtype=torch.float64)
    return ((w * scale) @ X.to(torch.float64)).to(X.dtype), [float(s) for s in scale]


@dataclass
class NormBoundConfig(ReducerConfig):
    max_norm: float | None = None
    """Bound M on each update's L2 norm (None: the round's median update norm)."""

    def __post_init__(self) -> None:
        if self.max_norm is not None and self.max_norm <= 0:
            raise ValueError(f"`max_norm` must be > 0 (got {self.max_norm})")


@register_reducer("norm_bound")
class NormBound(Reducer):
    config_cls = NormBoundConfig
    cfg: NormBoundConfig

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        m = self.cfg.max_norm
        if m is None:
            m = float(coordinate_median(X.norm(dim=1, keepdim=True))[0])
        if m <= 0:  # every update zero (or the median is): nothing to bound
            m = 1.0
        update, scale = norm_bounded_mean(X, weights, m)
        w = normalized_weights(weights)
        info = {
            "max_norm": m,
            "clipped": [int(client_ids[i]) for i, s in enumerate(scale) if s < 1],
        }
        return Reduction(update, [wi * s for wi, s in zip(w, scale, strict=True)], info)
