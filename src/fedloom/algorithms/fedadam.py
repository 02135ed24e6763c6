"""FedAdam (Reddi et al. 2021): v ← β2·v + (1 − β2)·Δ²; then the FedOpt step (see fedopt.py)."""

from __future__ import annotations

import torch

from fedloom.algorithms.base import register_algorithm
from fedloom.algorithms.fedopt import FedOpt


@register_algorithm("fedadam")
class FedAdam(FedOpt):
    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        b2 = self.cfg.beta2
        return b2 * v + (1 - b2) * delta**2
