"""FedYogi (Reddi et al. 2021): v ← v − (1 − β2)·Δ²·sign(v − Δ²); then the FedOpt step."""

from __future__ import annotations

import torch

from fedloom.algorithms.base import register_algorithm
from fedloom.algorithms.fedopt import FedOpt


@register_algorithm("fedyogi")
class FedYogi(FedOpt):
    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        d2 = delta**2
        return v - (1 - self.cfg.beta2) * d2 * torch.sign(v - d2)
