"""FedAvgM (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification"): server momentum on the averaged update.

    Δ = Σ_i w_i (x_i − x);   v ← β·v + Δ;   x ← x + η_s·v
Defaults: server_lr η_s = 1.0, momentum β = 0.9. β = 0, η_s = 1 is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedloom.algorithms.aggregate import add_scaled, subtract, zeros_like
from fedloom.algorithms.base import AlgorithmConfig, ClientUpdate, Strategy, register_algorithm
from fedloom.utils import StateDict


@dataclass
class FedAvgMConfig(AlgorithmConfig):
    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.server_lr <= 0:
            raise ValueError(f"`server_lr` must be > 0 (got {self.server_lr})")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1) (got {self.momentum})")


@register_algorithm("fedavgm")
class FedAvgM(Strategy):
    state_attrs = ("global_adapter", "velocity")
    mean_only = True
    config_cls = FedAvgMConfig
    cfg: FedAvgMConfig

    def initialize(self, adapter: StateDict) -> None:
        super().initialize(adapter)
        self.velocity: StateDict = zeros_like(adapter)

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        delta = subtract(self.average(updates, round_idx), self.global_adapter)
        self.velocity = add_scaled(delta, self.velocity, self.cfg.momentum)
        self.global_adapter = add_scaled(self.global_adapter, self.velocity, self.cfg.server_lr)
