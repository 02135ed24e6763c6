"""The reducer interface: how the server turns the sampled clients' updates into one update.

A reducer sees the clients' updates as one matrix — row i is client i's adapter minus the
global adapter, flattened in key order — and returns one aggregated update; the strategy
(FedAvg, FedAvgM, FedAdam, ...) then applies it exactly as it applies the plain mean. So any
reducer runs under any server optimiser:

    Δ_i = flatten(x_i − x)            X: [n, d]
    Δ   = reducer(X, w, ids)          [d]        (`mean`: Σ w_i Δ_i / Σ w_i)
    x̄   = x + unflatten(Δ)            what `Strategy.average` returns

The math lives in pure functions over ``X`` (one file per rule); a reducer object holds only
its config and, where a rule needs history across rounds (FoolsGold), that state, saved with
the server's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from fedloom.algorithms.aggregate import AggregationError, check_layout
from fedloom.utils import StateDict


@dataclass
class ReducerConfig:
    """Settings common to every reducer (none); each rule adds its own."""

    def min_clients(self) -> int:
        """The fewest updates a round must bring for the rule to be defined (a property of the
        settings: the config checks it without building the reducer)."""
        return 1


@dataclass
class Reduction:
    update: torch.Tensor
    """The aggregated update, flat: [d]."""
    weights: list[float]
    """Each client's share in ``update`` (0 = left out); sums to 1 for averaging rules, and
    is the rule's own notion of influence otherwise (median: 1/n each)."""
    info: dict[str, Any] = field(default_factory=dict)


class Reducer:
    name: ClassVar[str]
    config_cls: ClassVar[type[ReducerConfig]] = ReducerConfig
    robust: ClassVar[bool] = True
    """False only for the plain mean: robust rules need every client's update (no SecAgg+,
    no central DP's clipped mean)."""
    stateful: ClassVar[bool] = False
    """True for a rule that learns across rounds from what it reduces (FoolsGold's history):
    it must see each round's client updates once, so a second quantity (SCAFFOLD's control
    deltas) is combined with the shares it gave the adapters instead."""

    def __init__(self, cfg: ReducerConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        """The run's seed, for rules that sample (each draws from its own generator)."""

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        raise NotImplementedError

    def min_clients(self) -> int:
        """The fewest updates a round must bring for the rule to be defined."""
        return self.cfg.min_clients()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise AggregationError(f"reducer {self.name!r} keeps no state, got {sorted(state)}")


REDUCERS: dict[str, type[Reducer]] = {}


def register_reducer(name: str) -> Callable[[type[Reducer]], type[Reducer]]:
    def deco(cls: type[Reducer]) -> type[Reducer]:
        if name in REDUCERS:
            raise ValueError(f"reducer {name!r} is already registered")
        cls.name = name
        REDUCERS[name] = cls
        return cls

    return deco


def reducer_config(name: str, params: dict[str, Any] | None = None) -> ReducerConfig:
    """A reducer's validated settings (what the run config checks)."""
    if name not in REDUCERS:
        raise AggregationError(
            f"reducer {name!r} is not registered; choose one of {sorted(REDUCERS)}"
        )
    try:
        return REDUCERS[name].config_cls(**(params or {}))
    except TypeError as e:
        raise AggregationError(f"reducer {name!r}: {e}") from None


def build_reducer(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> Reducer:
    """The reducer a run aggregates with, built once by the engine (``seed``: the run's)."""
    return REDUCERS[name](reducer_config(name, params), seed)


# -- flat views of adapter states -------------------------------------------------------------


def flatten(state: StateDict, keys: Sequence[str]) -> torch.Tensor:
    """[d] fp32 vector of ``state``'s tensors in ``keys`` order."""
    return torch.cat([state[k].detach().reshape(-1).to(torch.float32) for k in keys])


def unflatten(vec: torch.Tensor, like: StateDict, keys: Sequence[str]) -> StateDict:
    """Split a [d] vector back into tensors shaped (and typed) like ``like``."""
    total = sum(like[k].numel() for k in keys)
    if vec.shape != (total,):
        raise AggregationError(f"flat update has shape {tuple(vec.shape)}, expected ({total},)")
    out, start = {}, 0
    for k in keys:
        n = like[k].numel()
        out[k] = vec[start : start + n].reshape(like[k].shape).to(like[k].dtype)
        start += n
    return out


def delta_matrix(states: Sequence[StateDict], base: StateDict) -> tuple[torch.Tensor, list[str]]:
    """X: [n, d], row i = flatten(states[i] − base); and the key order used."""
    check_layout(states, base)
    keys = sorted(base)
    b = flatten(base, keys)
    return torch.stack([flatten(s, keys) - b for s in states]), keys


def update_stats(X: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per client: the update's L2 norm and its cosine similarity to the mean update (how
    "typical" it looks to a server; 0 where either vector is zero)."""
    if X.dim() != 2:
        raise AggregationError(f"updates must be a matrix [n, d], got shape {tuple(X.shape)}")
    norms = X.norm(dim=1)
    mean = X.mean(dim=0)
    denom = norms * mean.norm()
    cos = torch.where(denom > 0, (X @ mean) / denom.clamp_min(1e-30), torch.zeros_like(norms))
    return [float(v) for v in norms], [float(v) for v in cos]


def check_matrix(X: torch.Tensor, weights: Sequence[float] | None = None) -> None:
    if X.dim() != 2 or X.shape[0] == 0:
        raise AggregationError(f"updates must be a non-empty matrix [n, d], got {tuple(X.shape)}")
    if weights is not None and len(weights) != X.shape[0]:
        raise AggregationError(f"{X.shape[0]} updates but {len(weights)} weights")
