"""SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning"), option II.

Client i with server control c and its own control c_i (kept across rounds, initialised 0):
    every local step:   θ ← θ − lr·(∇f_i(θ) + c − c_i)
    after K steps:      c_i⁺ = c_i − c + (x − θ) / (K·lr),   uploads Δc_i = c_i⁺ − c_i
Server:  x ← weighted average of θ_i;   c ← c + (1/N)·Σ_{i∈S} Δc_i   (N = all clients).

The local optimizer is AdamW, so the correction is applied as a separate parameter update
θ ← θ − lr·(c − c_i) after each optimizer step (as OpenFedLLM does), rather than folded into the
gradient where Adam's normalisation would rescale it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedloom.algorithms.aggregate import add_scaled, subtract, weighted_average, zeros_like
from fedloom.algorithms.base import Broadcast, ClientUpdate, Strategy, register_algorithm
from fedloom.reducers.base import delta_matrix, unflatten
from fedloom.train.local import TrainHook
from fedloom.utils import StateDict


class ControlVariateHook:
    def __init__(self, params: dict[str, torch.nn.Parameter], correction: StateDict):
        self.pairs = [(p, correction[k].to(p.device, p.dtype)) for k, p in params.items()]

    def loss_term(self) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        for p, corr in self.pairs:
            p.sub_(lr * corr)


@register_algorithm("scaffold")
class Scaffold(Strategy):
    state_attrs = ("global_adapter", "control")

    def initialize(self, adapter: StateDict) -> None:
        super().initialize(adapter)
        self.control: StateDict = zeros_like(adapter)

    def broadcast(self, client_id: int) -> Broadcast:
        return Broadcast(self.global_adapter, {"control": self.control})

    def client_hooks(
        self, bc: Broadcast, client_state: dict[str, Any], params: dict[str, torch.nn.Parameter]
    ) -> list[TrainHook]:
        c_i = client_state.get("control", zeros_like(bc.adapter))
        return [ControlVariateHook(params, subtract(bc.extras["control"], c_i))]

    def client_finish(
        self, bc: Broadcast, client_state: dict[str, Any], adapter: StateDict, steps: int, lr: float
    ) -> tuple[dict[str, StateDict], dict[str, Any]]:
        c, x = bc.extras["control"], bc.adapter
        c_i = client_state.get("control", zeros_like(x))
        c_new = {k: c_i[k] - c[k] + (x[k] - adapter[k]) / (steps * lr) for k in x}
        return {"delta_control": subtract(c_new, c_i)}, {**client_state, "control": c_new}

    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        self.global_adapter = self.average(updates, round_idx)
        deltas = [u.extras["delta_control"] for u in updates]
        if not self.reducer.robust:
            total = weighted_average(deltas, [1.0] * len(updates))
        else:
            total = self._robust_control_mean(deltas, [u.client_id for u in updates], round_idx)
        # mean over S times |S|/N  ==  (1/N)·Σ_{i∈S} Δc_i
        self.control = add_scaled(self.control, total, len(updates) / self.num_clients)

    def _robust_control_mean(
        self, deltas: list[StateDict], ids: list[int], round_idx: int
    ) -> StateDict:
        """The control deltas are a second path from each client into the model (every client's
        next steps follow c): under a robust reducer they go through the same rule as the
        adapters — reduced by it afresh (median, Krum, DnC...), or, for a rule that keeps state
        across rounds (FoolsGold), combined with the shares it gave the adapters this round.
        A plain mean here let a poisoned control reach every client whatever the reducer."""
        zero = zeros_like(self.control)
        X, keys = delta_matrix(deltas, zero)
        if self.reducer.stateful:
            share = self.last_aggregation["share"]
            w = torch.tensor([share[str(c)] for c in ids], dtype=X.dtype)
            vec = (w[:, None] * X).sum(0) / w.sum().clamp(min=1e-12)
        else:
            vec = self.reducer.reduce(X, [1.0] * len(ids), ids, round_idx).update
        return unflatten(vec, zero, keys)
