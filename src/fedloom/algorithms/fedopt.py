"""FedOpt family (Reddi et al. 2021, "Adaptive Federated Optimization"), shared by FedAdagrad,
FedAdam and FedYogi; each subclass defines only its second-moment update.

    Δ = Σ_i w_i (x_i − x)          (w_i = n_i/Σn when `weighted`, else 1/|S|)
    m ← β1·m + (1 − β1)·Δ
    v ← second_moment(v, Δ)        (Adagrad / Adam / Yogi; see the subclasses)
    x ← x + η·m / (√v + τ)
with m₀ = 0, v₀ = τ². Defaults follow OpenFedLLM: η = 1e-3, τ = 1e-3, β1 = 0.9, β2 = 0.99.
Unlike OpenFedLLM (which squares m), v is updated with Δ² as in the paper. No bias correction
(Flower's FedAdam applies one and uses η = 0.1; numbers therefore differ from Flower's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedloom.algorithms.aggregate import subtract
from fedloom.algorithms.base import AlgorithmConfig, ClientUpdate, Strategy
from fedloom.utils import StateDict


@dataclass
class FedOptConfig(AlgorithmConfig):
    server_lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.server_lr <= 0:
            raise ValueError(f"`server_lr` must be > 0 (got {self.server_lr})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"`beta1`, `beta2` must be in [0, 1) (got {self.beta1}, {self.beta2})")
        if self.tau <= 0:
            raise ValueError(f"`tau` must be > 0 (got {self.tau})")


class FedOpt(Strategy):
    state_attrs = ("global_adapter", "m", "v")
    mean_only = True
    config_cls = FedOptConfig
    cfg: FedOptConfig

    def initialize(self, adapter: StateDict) -> None:
        super().initialize(adapter)
        self.m: StateDict = {k: torch.zeros_like(v) for k, v in adapter.items()}
        self.v: StateDict = {k: torch.full_like(v, self.cfg.tau**2) for k, v in adapter.items()}

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        delta = subtract(self.average(updates, round_idx), self.global_adapter)
        b1, eta, tau = self.cfg.beta1, self.cfg.server_lr, self.cfg.tau
        for k, d in delta.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * d
            self.v[k] = self.second_moment(self.v[k], d)
            self.global_adapter[k] = self.global_adapter[k] + eta * self.m[k] / (
                self.v[k].sqrt() + tau
            )
