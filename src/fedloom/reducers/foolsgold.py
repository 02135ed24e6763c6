"""FoolsGold (Fung et al. 2020, "The Limitations of Federated Learning in Sybil Settings"),
Algorithm 1 with κ = 1. Sybils pushing one goal send similar updates over time, so each client
is down-weighted by how similar its *history* (the sum of all its past updates, kept on the
server) is to another client's:

    H_i ← H_i + Δ_i                                       (client ids, across rounds)
    cs_ij = cos(H_i, H_j) for i ≠ j, cs_ii = 0;  v_i = max_j cs_ij
    pardoning: cs_ij ← cs_ij · v_i / v_j  where v_i < v_j
    α_i = clip(1 − max_j cs_ij, 0, 1);  α ← α / max α;  α_i = 0.99 where α_i = 1
    α_i = clip(κ·(ln(α_i / (1 − α_i)) + 0.5), 0, 1)
    Δ = Σ_i α_i n_i Δ_i / Σ_i α_i n_i      (no update if every α_i = 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedloom.reducers.base import (
    Reducer,
    ReducerConfig,
    Reduction,
    check_matrix,
    register_reducer,
)


def foolsgold_weights(H: torch.Tensor, kappa: float = 1.0) -> list[float]:
    """[n, d] client histories -> α_i in [0, 1]."""
    check_matrix(H)
    n = H.shape[0]
    if n == 1:
        return [1.0]
    Hd = H.to(torch.float64)
    norms = Hd.norm(dim=1)
    denom = torch.outer(norms, norms)
    cs = torch.where(denom > 0, (Hd @ Hd.T) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    for i in range(n):
        for j in range(n):
            if i != j and v[i] < v[j]:
                cs[i, j] = cs[i, j] * v[i] / v[j]
    alpha = (1 - cs.max(dim=1).values).clamp(0.0, 1.0)
    if float(alpha.max()) == 0.0:
        return [0.0] * n
    alpha = alpha / alpha.max()
    alpha[alpha == 1] = 0.99
    with torch.no_grad():
        logit = kappa * (torch.log(alpha / (1 - alpha)) + 0.5)
    logit = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0)
    return [float(a) for a in logit.clamp(0.0, 1.0)]


@dataclass
class FoolsGoldConfig(ReducerConfig):
    kappa: float = 1.0
    """Confidence parameter of the logit."""

    def __post_init__(self) -> None:
        if self.kappa <= 0:
            raise ValueError(f"`kappa` must be > 0 (got {self.kappa})")


@register_reducer("foolsgold")
class FoolsGold(Reducer):
    stateful = True
    config_cls = FoolsGoldConfig
    cfg: FoolsGoldConfig

    def __init__(self, cfg: ReducerConfig, seed: int = 0) -> None:
        super().__init__(cfg, seed)
        self.history: dict[str, torch.Tensor] = {}
        """Per client id (as a string): the sum of its updates so far, flat fp32."""

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        check_matrix(X, weights)
        for cid, row in zip(client_ids, X, strict=True):
            key = str(cid)
            prev = self.history.get(key)
            self.history[key] = row.clone() if prev is None else prev + row
        H = torch.stack([self.history[str(c)] for c in client_ids])
        alpha = foolsgold_weights(H, self.cfg.kappa)
        raw = [a * w for a, w in zip(alpha, weights, strict=True)]
        total = sum(raw)
        if total <= 0:
            info = {"alpha": alpha, "note": "every client down-weighted to 0: no update"}
            return Reduction(torch.zeros(X.shape[1], dtype=X.dtype), [0.0] * len(raw), info)
        share = [r / total for r in raw]
        w = torch.tensor(share, dtype=torch.float64)
        return Reduction((w @ X.to(torch.float64)).to(X.dtype), share, {"alpha": alpha})

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: v.clone() for k, v in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: v.clone() for k, v in state.get("history", {}).items()}
