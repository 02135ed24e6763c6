"""Secure aggregation: SecAgg+ (Bell et al. 2020) under the Flower engines, through Flower's
``SecAggPlusWorkflow`` (server) and ``secaggplus_mod`` (client).

Each round, for the sampled clients S:
1. setup / share keys: clients exchange public keys and Shamir shares of their mask seeds with
   their neighbours (``num_shares``; any ``reconstruction_threshold`` shares rebuild a seed);
2. each client trains, then uploads  w_i·Δ_i  (Δ_i = its adapter update, w_i = its aggregation
   weight: shard size n_i, or 1 for unweighted algorithms) and w_i, quantised to integers in
   [-clipping_range, clipping_range] and masked with pairwise masks (which cancel in the sum) and
   a private mask (removed at unmasking from its shares);
3. the server adds the masked vectors and removes the masks; it learns only Σ w_i·Δ_i / Σ w_i.

fedloom then gives the strategy that average as every client's adapter, so FedAvg, FedProx,
FedAvgM and the FedOpt family step exactly as they would on the individual adapters (they read
only the weighted mean). Per-client training metrics (loss, ε, seconds) are not masked.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from fedloom.algorithms.aggregate import add_scaled
from fedloom.algorithms.base import Broadcast, ClientUpdate
from fedloom.errors import FedloomError
from fedloom.settings import SecAggConfig
from fedloom.utils import StateDict


class SecAggRangeError(FedloomError, ValueError):
    """A client's update has values outside ``privacy.secagg.clipping_range``."""


def _weight(fed: Any, cid: int) -> int:
    return len(fed.data.clients[cid]) if fed.strategy.cfg.weighted else 1


class _OneRound(LegacyStrategy):
    """The legacy strategy SecAggPlusWorkflow drives: it hands out this round's fit
    instructions and keeps what the workflow aggregated."""

    def __init__(self, fitins: list[tuple[ClientProxy, FitIns]]) -> None:
        self.fitins = fitins
        self.results: list[tuple[ClientProxy, FitRes]] = []
        self.failures: list[Any] = []

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: Any
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.fitins

    def aggregate_fit(
        self, server_round: int, results: Any, failures: Any
    ) -> tuple[Parameters | None, dict[str, Any]]:
        self.results, self.failures = list(results), list(failures)
        return (results[0][1].parameters if results else None), {}

    def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> tuple:
        return None, {}

    def evaluate(self, server_round: int, parameters: Any) -> None:
        return None


def _fitins(bc: Broadcast, keys: list[str], round_idx: int, cid: int, lr: float, w: int) -> FitIns:
    params = ndarrays_to_parameters([bc.adapter[k].detach().cpu().numpy() for k in keys])
    config = {"round": round_idx, "client-id": cid, "lr": lr, "weight": w, "keys": "\n".join(keys)}
    return FitIns(params, config)  # type: ignore[arg-type]


def secagg_round(
    grid: Grid,
    fed: Any,
    secagg: SecAggConfig,
    node_of: dict[int, int],
    round_idx: int,
    cids: list[int],
    lr: float,
    timeout: float | None,
) -> tuple[list[ClientUpdate], dict[int, str]]:
    """One round of training with SecAgg+: updates that all carry the securely aggregated
    adapter (and each client's own metrics), and the clients that failed."""
    strategy = fed.strategy
    keys = list(strategy.broadcast(cids[0]).adapter)
    run_id = int(getattr(getattr(grid, "run", None), "run_id", 0) or 0)
    proxies = {c: GridClientProxy(node_of[c], grid, run_id) for c in cids}
    shim = _OneRound(
        [
            (proxies[c], _fitins(strategy.broadcast(c), keys, round_idx, c, lr, _weight(fed, c)))
            for c in cids
        ]
    )
    state = RecordDict()
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: round_idx + 1})
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        shim.fitins[0][1].parameters, keep_input=True
    )
    context = LegacyContext(
        Context(run_id=run_id, node_id=0, node_config={}, state=state, run_config={}),
        strategy=shim,
        client_manager=SimpleClientManager(),
    )
    # Flower takes an int number of shares > 2 (with a smaller int threshold), or a float share
    # of the sampled clients: with 2 clients each shares with the other, both must stay
    shares = min(secagg.num_shares, len(cids))
    num_shares: int | float = shares if shares > 2 else 1.0
    threshold = min(secagg.reconstruction_threshold, shares - 1 if shares > 2 else len(cids))
    workflow = SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        max_weight=float(max(_weight(fed, c) for c in cids)),
        clipping_range=secagg.clipping_range,
        quantization_range=secagg.quantization_range,
        timeout=timeout,
    )
    t0 = time.perf_counter()
    workflow(grid, context)
    node_to_cid = {n: c for c, n in node_of.items()}
    replied = {node_to_cid[int(p.node_id)]: res for p, res in shim.results}
    failed = {
        c: f"no masked update in the SecAgg+ round ({len(shim.failures)} failure(s) reported)"
        for c in cids
        if c not in replied
    }
    if not replied:
        return [], failed
    agg_delta = {
        k: torch.from_numpy(np.array(a, copy=True)).to(strategy.broadcast(cids[0]).adapter[k].dtype)
        for k, a in zip(
            keys, parameters_to_ndarrays(next(iter(replied.values())).parameters), strict=True
        )
    }
    updates = []
    for c in cids:
        if c not in replied:
            continue
        res = replied[c]
        adapter = add_scaled(strategy.broadcast(c).adapter, agg_delta, 1.0)
        metrics = {k: float(v) for k, v in res.metrics.items() if isinstance(v, int | float)}
        metrics["secagg_seconds"] = time.perf_counter() - t0
        updates.append(ClientUpdate(c, adapter, len(fed.data.clients[c]), {}, metrics, {}))
    return updates, failed


# -- client side ----------------------------------------------------------------------------------
def secagg_train(
    fed: Any, content: RecordDict, cid_of_node: int, secagg: SecAggConfig
) -> RecordDict:
    """A client's train work under SecAgg+: legacy FitIns in, FitRes with the update
    Δ = adapter − received adapter out (the ClientApp's ``secaggplus_mod`` weights, quantises
    and masks it)."""
    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    cfg = fitins.config
    keys = str(cfg["keys"]).split("\n")
    round_idx, cid, lr, weight = (
        int(cfg["round"]),
        int(cfg["client-id"]),
        float(cfg["lr"]),
        int(cfg["weight"]),
    )
    if cid != cid_of_node:
        raise RuntimeError(
            f"message for client {cid} reached the SuperNode of client {cid_of_node}"
        )
    arrays = parameters_to_ndarrays(fitins.parameters)
    bc = Broadcast(
        {k: torch.from_numpy(np.array(a, copy=True)) for k, a in zip(keys, arrays, strict=True)}
    )
    update = fed.fit_client(round_idx, cid, lr, bc)
    delta: StateDict = {k: update.payload[k] - bc.adapter[k] for k in keys}
    peak = max(float(v.abs().max()) for v in delta.values())
    if peak > secagg.clipping_range:
        raise SecAggRangeError(
            f"client {cid}: an update value reaches {peak:.4g}, outside "
            f"privacy.secagg.clipping_range = {secagg.clipping_range}; SecAgg+ would clip it. "
            "Raise clipping_range (or lower train.lr)"
        )
    metrics = {k: float(v) for k, v in update.metrics.items() if k != "update_norm"}  # a norm leaks
    res = FitRes(
        Status(Code.OK, ""),
        ndarrays_to_parameters([delta[k].detach().cpu().numpy() for k in keys]),
        weight,
        metrics,  # type: ignore[arg-type]
    )
    return compat.fitres_to_recorddict(res, keep_input=True)


def secagg_tolerance(secagg: SecAggConfig, clients: int) -> float:
    """A bound on the error SecAgg+'s quantisation adds to one averaged value in one round:
    each client's weighted value is rounded to a step of 2·range/quantization_range, and its
    weight ratio too (a relative error of 1/quantization_range on a value ≤ range)."""
    step = 2 * secagg.clipping_range / secagg.quantization_range
    return clients * (step + secagg.clipping_range / secagg.quantization_range) * 2
