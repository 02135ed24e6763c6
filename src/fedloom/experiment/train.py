"""The train stage kind: per-client records -> a federated run, resumable, with a typed result.

Every pipeline trains the same way: its own records per client (written as JSONL in the
stage's folder), an evaluation source, the pipeline's ``train:`` run config with a few
overrides (algorithm, reducer, privacy, init adapter ...), run in ``<stage>/run`` by an engine.
A finished run is read back, a cut-off one resumes from its checkpoint.

    sources = client_sources(ctx.folder, rows_by_client) + [heldout_source(held_path)]
    result = train_run(cfg.train, ctx.folder / "run", sources, ctx.console,
                       overrides={"federation": {"algorithm": "fedprox"}})
    result.adapter, result.summary["final_eval_loss"]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from fedloom.config import config_from_dict
from fedloom.errors import FedloomError
from fedloom.settings import RunConfig
from fedloom.utils import write_jsonl


class TrainStageError(FedloomError, ValueError):
    """A train stage was asked to run with nothing to train on."""


def _inprocess(cfg: RunConfig, out: Path, console: Console, resume: bool) -> dict[str, Any]:
    from fedloom.engine.inprocess import run

    return run(cfg, out, console, resume=resume)


def _flower_sim(cfg: RunConfig, out: Path, console: Console, resume: bool) -> dict[str, Any]:
    from fedloom.flower.simulation import run_simulation

    return run_simulation(cfg, out, resume=resume)


ENGINES: dict[str, Callable[[RunConfig, Path, Console, bool], dict[str, Any]]] = {
    "inprocess": _inprocess,
    "flower-sim": _flower_sim,
}
"""How a pipeline's runs are executed: in one process, or by Flower's simulation engine."""


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    config: RunConfig
    reused: bool
    """The run had finished before (its summary was read back)."""

    @property
    def adapter(self) -> Path:
        """The global adapter (``local``: see ``client_adapters``)."""
        return self.run_dir / "adapter"

    def client_adapters(self) -> dict[int, Path]:
        """Per-client adapters (the ``local`` baseline writes one per trained client)."""
        return {
            int(p.name.split("_")[1]): p
            for p in sorted((self.run_dir / "adapters").glob("client_*"))
        }

    def brief(self) -> dict[str, Any]:
        """The summary fields every pipeline reports for a run."""
        s = self.summary
        return {
            "base_eval_loss": s.get("base_eval_loss"),
            "final_eval_loss": s.get("final_eval_loss"),
            "train_seconds": s.get("train_seconds"),
            "wall_seconds": s.get("wall_seconds"),
            "client_sizes": s.get("client_sizes"),
        }


def client_sources(
    folder: Path,
    clients: Sequence[Sequence[Mapping[str, Any]]],
    prefix: str = "client",
    skip_empty: bool = False,
) -> list[dict[str, Any]]:
    """Write each client's records to ``folder/<prefix>_<c>.jsonl``; one data source per client
    (pinned to that client id, nothing held out of it). An empty client is an error unless
    ``skip_empty`` (it then takes no part)."""
    sources = []
    for c, rows in enumerate(clients):
        if not rows:
            if skip_empty:
                continue
            raise TrainStageError(f"client {c} has no training records")
        path = folder / f"{prefix}_{c}.jsonl"
        write_jsonl(path, rows)
        sources.append({"name": "local", "path": str(path), "clients": [c], "heldout": 0})
    return sources


def heldout_source(path: Path, domain: str | None = None) -> dict[str, Any]:
    """An evaluation-only source (never trained on)."""
    src: dict[str, Any] = {"name": "local", "path": str(path), "heldout_only": True}
    if domain is not None:
        src["domain"] = domain
    return src


def merge(into: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Nested update: mappings merge key by key, everything else replaces."""
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def train_run(
    base: RunConfig,
    out: Path,
    sources: list[dict[str, Any]],
    console: Console,
    *,
    num_clients: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    engine: str = "inprocess",
) -> TrainResult:
    """Train ``base`` (a pipeline's ``train:`` config) on ``sources`` in ``out``; ``num_clients``
    (default: the sources pinned to clients) are partitioned iid; ``overrides`` are merged into
    the run config (e.g. ``{"federation": {"algorithm": "scaffold"}}``)."""
    raw = base.to_dict()
    raw["data"]["sources"] = sources
    if num_clients is None:
        num_clients = len({c for s in sources for c in s.get("clients", [])}) or 1
    raw["partition"] |= {"num_clients": num_clients, "strategy": "iid"}
    merge(raw, overrides or {})
    return run_or_resume(config_from_dict(raw), out, console, engine)


def run_or_resume(
    cfg: RunConfig, out: Path, console: Console, engine: str = "inprocess"
) -> TrainResult:
    """Run ``cfg`` in ``out``: a finished run is read back, a cut-off one resumes from its
    checkpoint, a new one starts."""
    if engine not in ENGINES:
        raise TrainStageError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}")
    done = out / "summary.json"
    if done.exists():
        return TrainResult(out, dict(json.loads(done.read_text())), cfg, True)
    summary = ENGINES[engine](cfg, out, console, (out / "checkpoint.pt").exists())
    return TrainResult(out, summary, cfg, False)
