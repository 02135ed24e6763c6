"""Pure aggregation functions over adapter state dicts (no side effects, shapes checked)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedloom.errors import FedloomError
from fedloom.utils import StateDict


class AggregationError(FedloomError, ValueError):
    """Client states disagree in keys or shapes, or weights are invalid."""


def check_layout(states: Sequence[StateDict], reference: StateDict | None = None) -> None:
    """All states (and the reference, if given) have the same keys and tensor shapes."""
    if not states:
        raise AggregationError("nothing to aggregate: no client states")
    ref = reference if reference is not None else states[0]
    for i, s in enumerate(states):
        if s.keys() != ref.keys():
            diff = sorted(set(s) ^ set(ref))
            raise AggregationError(f"client state {i} has different keys, e.g. {diff[:3]}")
        for k, t in s.items():
            if t.shape != ref[k].shape:
                raise AggregationError(
                    f"client state {i}: `{k}` has shape {tuple(t.shape)}, expected {tuple(ref[k].shape)}"
                )


def normalized_weights(weights: Sequence[float]) -> list[float]:
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise AggregationError(
            f"aggregation weights must be >= 0 with a positive sum, got {list(weights)}"
        )
    total = float(sum(weights))
    return [w / total for w in weights]


def weighted_average(states: Sequence[StateDict], weights: Sequence[float]) -> StateDict:
    """Σ_i w_i·s_i / Σ_i w_i, key by key (computed in fp64, returned in the input dtype)."""
    check_layout(states)
    if len(weights) != len(states):
        raise AggregationError(f"{len(states)} states but {len(weights)} weights")
    ws = normalized_weights(weights)
    out = {}
    for k, ref in states[0].items():
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for w, s in zip(ws, states, strict=True):
            acc += w * s[k].to(torch.float64)
        out[k] = acc.to(ref.dtype)
    return out


def subtract(a: StateDict, b: StateDict) -> StateDict:
    check_layout([a], b)
    return {k: a[k] - b[k] for k in a}


def add_scaled(a: StateDict, b: StateDict, scale: float = 1.0) -> StateDict:
    """a + scale·b."""
    check_layout([a], b)
    return {k: a[k] + scale * b[k] for k in a}


def zeros_like(a: StateDict) -> StateDict:
    return {k: torch.zeros_like(v) for k, v in a.items()}


def clone(a: StateDict) -> StateDict:
    return {k: v.detach().clone() for k, v in a.items()}
