"""Local-only baseline: every client trains alone on its own shard; nothing is aggregated.

Each client trains at the rounds it is sampled (the same schedule and compute as the federated
run), starting from its own previous adapter. The engine evaluates the adapter of every client
that has trained and reports each and their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.algorithms.aggregate import clone
from fedloom.algorithms.base import Broadcast, ClientUpdate, Strategy, register_algorithm
from fedloom.utils import StateDict


@register_algorithm("local")
class LocalOnly(Strategy):
    state_attrs = ("global_adapter", "client_adapters")

    def initialize(self, adapter: StateDict) -> None:
        super().initialize(adapter)
        self.client_adapters: dict[int, StateDict] = {}

    def broadcast(self, client_id: int) -> Broadcast:
        return Broadcast(self.client_adapters.get(client_id, self.global_adapter))

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        for u in updates:
            self.client_adapters[u.client_id] = clone(u.adapter)

    def eval_targets(self) -> dict[str, StateDict]:
        """Every client that has trained (one never sampled still holds the base adapter and
        would only repeat the base model's score: with 145 clients and 5 a round, most are);
        before any client trained, the shared initial adapter."""
        if not self.client_adapters:
            return {"global": self.global_adapter}
        return {f"client_{c}": self.client_adapters[c] for c in sorted(self.client_adapters)}
