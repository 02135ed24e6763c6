"""The strategy interface every FL algorithm implements.

A round, as the engines run it (server side on the strategy object, client side pure):

    for cid in strategy.sample(rng, k):
        bc = strategy.broadcast(cid)                              # server -> client
        hooks = strategy.client_hooks(bc, client_state, params)   # client: FedProx / SCAFFOLD
        ... local training ...
        extras, client_state = strategy.client_finish(bc, client_state, adapter, steps, lr)
    strategy.aggregate(round, updates)                            # server: new global adapter

Server state (global adapter, FedOpt moments, SCAFFOLD's c) lives on the strategy; a client's
own state (SCAFFOLD's c_i) is a dict the client keeps and passes back in, so the same methods run
in-process or on a remote client.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from fedloom.algorithms.aggregate import clone, weighted_average
from fedloom.reducers.base import Reducer
from fedloom.train.local import TrainHook
from fedloom.utils import StateDict


@dataclass
class AlgorithmConfig:
    weighted: bool = True
    """Weight clients by their shard size n_i (True) or equally (False)."""


@dataclass
class Broadcast:
    adapter: StateDict
    extras: dict[str, StateDict] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    client_id: int
    adapter: StateDict
    num_examples: int
    """Full shard size n_i (the aggregation weight), not the examples drawn this round."""
    extras: dict[str, StateDict] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    payload: StateDict = field(default_factory=dict)
    """What the client sent for its adapter (encoded by the run's codec); the server decodes
    it into ``adapter``."""


class Strategy:
    name: ClassVar[str]
    config_cls: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    pooled_data: ClassVar[bool] = False
    """True for the centralized baseline: the engine gives it one client holding all data."""
    every_round: ClassVar[bool] = False
    """True when the same clients train at every round (the local baseline): the engine's
    dynamic local steps then spread a client's epochs over every round, not over the visits a
    random sample would give it."""
    mean_only: ClassVar[bool] = False
    """True when the server step reads the client adapters only through their weighted mean
    (no per-client extras or adapters): central DP may noise that mean, SecAgg+ may hide the
    individual adapters."""
    state_attrs: ClassVar[tuple[str, ...]] = ("global_adapter",)
    """The attributes that are server state, saved by :meth:`state_dict` in a checkpoint."""

    def __init__(
        self, cfg: AlgorithmConfig, num_clients: int, reducer: Reducer | None = None
    ) -> None:
        from fedloom.reducers import build_reducer

        self.cfg = cfg
        self.num_clients = num_clients
        self.global_adapter: StateDict = {}
        self.reducer: Reducer = reducer if reducer is not None else build_reducer("mean")
        self.last_aggregation: dict[str, Any] = {}
        """The last round's reducer report: per client update norm, cosine to the mean
        update, share in the aggregate, and the rule's own notes (selected, clipped ...)."""

    # -- server side ------------------------------------------------------------------------
    def initialize(self, adapter: StateDict) -> None:
        self.global_adapter = clone(adapter)

    def sample(self, rng: random.Random, k: int, exclude: Collection[int] = ()) -> list[int]:
        """Clients for this round: k distinct ids drawn with the engine's sampling RNG, from
        those not in ``exclude`` (clients that spent their privacy budget)."""
        pool = [c for c in range(self.num_clients) if c not in exclude]
        return sorted(rng.sample(pool, min(k, len(pool))))

    def broadcast(self, client_id: int) -> Broadcast:
        return Broadcast(self.global_adapter)

    def weights(self, updates: Sequence[ClientUpdate]) -> list[float]:
        return [float(u.num_examples) if self.cfg.weighted else 1.0 for u in updates]

    def average(self, updates: Sequence[ClientUpdate], round_idx: int = 0) -> StateDict:
        """The clients' adapters combined by the reducer (`federation.reducer`): the weighted
        mean by default, computed exactly as before; a robust rule's update is added to the
        global adapter. Records :attr:`last_aggregation`."""
        from fedloom.reducers import Reduction, delta_matrix, unflatten, update_stats

        weights = self.weights(updates)
        ids = [u.client_id for u in updates]
        X, keys = delta_matrix([u.adapter for u in updates], self.global_adapter)
        norms, cos = update_stats(X)
        if len(updates) < self.reducer.min_clients():
            from fedloom.algorithms.aggregate import AggregationError

            raise AggregationError(
                f"reducer {self.reducer.name!r} needs at least {self.reducer.min_clients()} "
                f"updates per round, got {len(updates)}: sample more clients or relax its "
                "parameters (`federation.reducer_params`)"
            )
        if self.reducer.robust:
            red = self.reducer.reduce(X, weights, ids, round_idx)
            out = {
                k: self.global_adapter[k] + v
                for k, v in unflatten(red.update, self.global_adapter, keys).items()
            }
        else:  # the plain mean: the exact fp64 average of the adapters (X only for the stats)
            from fedloom.algorithms.aggregate import normalized_weights

            out = weighted_average([u.adapter for u in updates], weights)
            red = Reduction(X.new_zeros(0), normalized_weights(weights))
        self.last_aggregation = {
            "reducer": self.reducer.name,
            "update_norm": {str(c): round(v, 6) for c, v in zip(ids, norms, strict=True)},
            "cos_to_mean": {str(c): round(v, 6) for c, v in zip(ids, cos, strict=True)},
            "share": {str(c): round(v, 6) for c, v in zip(ids, red.weights, strict=True)},
            **red.info,
        }
        return out

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        raise NotImplementedError

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All server state (global adapter, moments, controls, per-client adapters): the
        attributes named in ``state_attrs``, deep-copied; tensors and plain values only, so a
        checkpoint loads with ``torch.load(weights_only=True)``."""
        import copy

        state = {k: copy.deepcopy(getattr(self, k)) for k in self.state_attrs}
        reducer = self.reducer.state_dict()
        if reducer:  # only stateful rules (FoolsGold) add a key: other checkpoints unchanged
            state["reducer"] = reducer
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from fedloom.errors import CheckpointError

        state = dict(state)
        self.reducer.load_state_dict(state.pop("reducer", {}))
        if set(state) != set(self.state_attrs):
            raise CheckpointError(
                f"the checkpoint's {self.name} state has {sorted(state)}, expected "
                f"{sorted(self.state_attrs)}: it was written by another algorithm or version"
            )
        for k in self.state_attrs:
            setattr(self, k, state[k])

    def eval_targets(self) -> dict[str, StateDict]:
        """Adapters the engine evaluates and saves: the global one, or one per client (local)."""
        return {"global": self.global_adapter}

    # -- client side (no server state read here beyond the broadcast) -----------------------
    def client_hooks(
        self, bc: Broadcast, client_state: dict[str, Any], params: dict[str, torch.nn.Parameter]
    ) -> list[TrainHook]:
        return []

    def client_finish(
        self, bc: Broadcast, client_state: dict[str, Any], adapter: StateDict, steps: int, lr: float
    ) -> tuple[dict[str, StateDict], dict[str, Any]]:
        """Extra tensors to upload and the client's new state."""
        return {}, client_state


ALGORITHMS: dict[str, type[Strategy]] = {}


def register_algorithm(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        if name in ALGORITHMS:
            raise ValueError(f"algorithm {name!r} is already registered")
        cls.name = name
        ALGORITHMS[name] = cls
        return cls

    return deco
