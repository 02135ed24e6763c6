"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"):  x ← Σ_{i∈S} (n_i / Σ_{j∈S} n_j) · x_i   (uniform weights if not weighted)."""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.algorithms.base import ClientUpdate, Strategy, register_algorithm


@register_algorithm("fedavg")
class FedAvg(Strategy):
    mean_only = True

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        self.global_adapter = self.average(updates, round_idx)
