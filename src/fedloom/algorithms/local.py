"""Local-only baseline: a fixed set of clients each trains alone on its own shard; nothing is
aggregated.

FedLLM-Bench's (and OpenFedLLM's) local baseline gives a client that trains alone the budget it
would have had in the federation: here the first round's sample (``federation.sample_clients``
clients, drawn with the engine's sampling RNG) is kept for every round, so each of these clients
trains at every round — ``rounds x local_steps`` steps, or with ``local_steps: dynamic`` the
steps that make ``epochs`` passes over its own shard over the whole run, exactly what it does in
expectation in the federation (:meth:`fedloom.engine.inprocess.Federation.local_steps`). The
compute equals a federated run's with the same ``sample_clients``. The engine evaluates the
adapter of every client and reports each and their mean.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from fedloom.algorithms.aggregate import clone
from fedloom.algorithms.base import Broadcast, ClientUpdate, Strategy, register_algorithm
from fedloom.utils import StateDict


@register_algorithm("local")
class LocalOnly(Strategy):
    state_attrs = ("global_adapter", "client_adapters", "scored")
    every_round = True

    def initialize(self, adapter: StateDict) -> None:
        super().initialize(adapter)
        self.client_adapters: dict[int, StateDict] = {}
        self.scored: list[int] = []
        """The clients that train (every round) and are scored: the first round's sample."""

    def sample(self, rng: random.Random, k: int, exclude: Collection[int] = ()) -> list[int]:
        """The first call draws ``k`` clients as a federated run would; every later call returns
        the same ones (less those in ``exclude``, which spent their privacy budget)."""
        if not self.scored:
            self.scored = super().sample(rng, k, exclude)
        return [c for c in self.scored if c not in exclude]

    def broadcast(self, client_id: int) -> Broadcast:
        return Broadcast(self.client_adapters.get(client_id, self.global_adapter))

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        for u in updates:
            self.client_adapters[u.client_id] = clone(u.adapter)

    def eval_targets(self) -> dict[str, StateDict]:
        """Every client that has trained; before any client trained, the shared initial
        adapter."""
        if not self.client_adapters:
            return {"global": self.global_adapter}
        return {f"client_{c}": self.client_adapters[c] for c in sorted(self.client_adapters)}
