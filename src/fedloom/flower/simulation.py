"""``fedloom run CONFIG --engine flower-sim``: Flower's Simulation Runtime on this machine
(Ray actors run the ClientApps; one virtual SuperNode per client)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import fedloom.flower  # noqa: F401  (offline Flower settings)
from fedloom.data import build_federated_data
from fedloom.models.loader import load_tokenizer
from fedloom.settings import RunConfig
from fedloom.utils import available_cores


def num_clients(cfg: RunConfig) -> int:
    """Clients of the config's partition: ``partition.num_clients``, or for `natural` (no
    number given) as many as the data has values, counted from the data alone (no model)."""
    if cfg.partition.num_clients is not None:
        return cfg.partition.num_clients
    from fedloom.algorithms import ALGORITHMS
    from fedloom.tasks import get_task

    pooled = ALGORITHMS[cfg.federation.algorithm].pooled_data
    tok = load_tokenizer(cfg.model.name)
    data = build_federated_data(
        cfg.data, cfg.partition, tok, cfg.seed, pooled=pooled, convert=get_task(cfg.task).to_record
    )
    return len(data.clients)


def run_simulation(cfg: RunConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    from flwr.simulation import run_simulation as flwr_run_simulation

    from fedloom.flower.apps import make_client_app, make_server_app

    logging.getLogger("flwr").setLevel(logging.WARNING)
    flwr_run_simulation(
        server_app=make_server_app(lambda ctx: (cfg, str(out), resume)),
        client_app=make_client_app(lambda ctx: cfg),
        num_supernodes=num_clients(cfg),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": available_cores(), "include_dashboard": False},
        },
    )
    summary_path = Path(out) / "summary.json"
    if not summary_path.exists():
        raise RuntimeError(f"the Flower simulation ended without a summary in {out} (see its log)")
    return dict(json.loads(summary_path.read_text()))
