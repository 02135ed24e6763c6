"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

Client: minimise  f_i(θ) + (μ/2)·‖θ − x‖²  over the trainable (LoRA) parameters, x the global
adapter received this round. Server: FedAvg. Default μ = 0.01 (OpenFedLLM). μ = 0 is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedloom.algorithms.base import AlgorithmConfig, Broadcast, register_algorithm
from fedloom.algorithms.fedavg import FedAvg
from fedloom.train.local import TrainHook


@dataclass
class FedProxConfig(AlgorithmConfig):
    mu: float = 0.01

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"`mu` must be >= 0 (got {self.mu})")


class ProximalHook:
    def __init__(
        self, mu: float, params: dict[str, torch.nn.Parameter], anchor: dict[str, torch.Tensor]
    ):
        self.mu = mu
        self.pairs = [(p, anchor[k].to(p.device, p.dtype)) for k, p in params.items()]

    def loss_term(self) -> torch.Tensor | None:
        if self.mu == 0:
            return None
        sq = sum(((p.float() - a.float()) ** 2).sum() for p, a in self.pairs)
        return 0.5 * self.mu * sq  # type: ignore[return-value]

    def after_step(self, lr: float) -> None:
        return None


@register_algorithm("fedprox")
class FedProx(FedAvg):
    config_cls = FedProxConfig
    cfg: FedProxConfig

    def client_hooks(
        self, bc: Broadcast, client_state: dict[str, Any], params: dict[str, torch.nn.Parameter]
    ) -> list[TrainHook]:
        return [ProximalHook(self.cfg.mu, params, bc.adapter)]
