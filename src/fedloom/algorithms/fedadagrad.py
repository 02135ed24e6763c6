"""FedAdagrad (Reddi et al. 2021): v ← v + Δ²; then the FedOpt step (see fedopt.py)."""

from __future__ import annotations

import torch

from fedloom.algorithms.base import register_algorithm
from fedloom.algorithms.fedopt import FedOpt


@register_algorithm("fedadagrad")
class FedAdagrad(FedOpt):
    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return v + delta**2
