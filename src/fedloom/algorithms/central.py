"""Centralized baseline: one client holds the union of all clients' training data.

It trains ``sample_clients × local_steps`` steps per round — the same total number of optimizer
steps as the federated run — with the same per-round cosine learning rate, and its result becomes
the global adapter. This is the upper reference a federated algorithm is measured against.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from fedloom.algorithms.base import register_algorithm
from fedloom.algorithms.fedavg import FedAvg


@register_algorithm("central")
class Central(FedAvg):
    pooled_data = True
    mean_only = False  # one pooled client: nothing to average or hide

    def sample(self, rng: random.Random, k: int, exclude: Collection[int] = ()) -> list[int]:
        return [] if 0 in exclude else [0]
