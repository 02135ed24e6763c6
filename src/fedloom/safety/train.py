"""A table row's run: the federation (benign and malicious clients, a robust reducer) or the
server-side defense fine-tune."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedloom.experiment.train import heldout_source, train_run
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.safety.config import SafetyPipelineConfig


def federation_run(
    ctx: StageContext, cfg: PipelineConfig, share: float | None, reducer: str
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """A federated run over benign clients (normal + aligned pairs) and, with ``share``, the
    malicious ones (attack pairs only); the robust ``reducer``. (sources, clients, overrides)"""
    p: SafetyPipelineConfig = cfg.params
    data = ctx.folder_of("data")
    aligned = ctx.folder_of("aligned-data") / "aligned.jsonl"
    sources = [
        {"name": "local", "path": str(data / "normal_clients.jsonl"), "heldout": 0, "domain": "normal"},
        {"name": "local", "path": str(aligned), "heldout": 0, "domain": "aligned",
         "limit": p.num_clients * p.aligned_per_client},
    ]  # fmt: skip
    raw: dict[str, Any] = {
        "federation": {
            "reducer": reducer,
            "reducer_params": reducer_params(cfg, reducer, share or p.malicious),
        }
    }
    if share is not None:
        attack = ctx.folder_of("attack-data") / "attack.jsonl"
        limit = round(share * p.num_clients) * p.attack_per_client
        raw["safety"] = {
            "malicious_clients": share,
            "attack": {"name": "local", "path": str(attack), "domain": "attack", "limit": limit},
        }
    return sources, p.num_clients, raw


def defense_run(
    ctx: StageContext, cfg: PipelineConfig, init: str
) -> tuple[list[dict[str, Any]], int, dict[str, Any], Path]:
    """The server-side defense: one party fine-tunes the given row's global adapter on the
    defense set for `defense_steps` steps. (sources, clients, overrides, the adapter)"""
    p: SafetyPipelineConfig = cfg.params
    source_row, level = init.split("|")
    if source_row == "best":
        source_row, _ = best_row(ctx, cfg)
    defense = ctx.folder_of(f"defense-{level}.data") / "defense.jsonl"
    sources = [{"name": "local", "path": str(defense), "heldout": 0, "domain": "defense"}]
    init_from = ctx.folder_of(f"{source_row}.train") / "run" / "adapter"
    raw: dict[str, Any] = {
        "federation": {"algorithm": "fedavg", "rounds": 1, "sample_clients": 1, "min_clients": 1},
        "train": {"local_steps": p.defense_steps}
        | ({"lr": p.defense_lr} if p.defense_lr is not None else {}),
        "lora": {"init_from": str(init_from)},
    }
    return sources, 1, raw, init_from


def train_row(
    ctx: StageContext,
    cfg: PipelineConfig,
    share: float | None,
    reducer: str,
    init: str | None,
) -> dict[str, Any]:
    """A row's training: a federation (attacked or not, any reducer) or, with ``init``
    (`<row>|L<k>`), the defense fine-tune of that row's adapter."""
    p: SafetyPipelineConfig = cfg.params
    held = heldout_source(ctx.folder_of("data") / "heldout.jsonl", "heldout")
    init_from: Path | None = None
    if init is None:
        sources, n, raw = federation_run(ctx, cfg, share, reducer)
    else:
        sources, n, raw, init_from = defense_run(ctx, cfg, init)
    raw["eval"] = {"max_examples": p.heldout}
    out = ctx.folder / "run"
    res = train_run(cfg.train, out, [*sources, held], ctx.console, num_clients=n, overrides=raw)
    summary = res.summary
    return {
        "malicious_clients": summary.get("malicious_clients"),
        "reducer": reducer,
        "init_from": str(init_from) if init_from else None,
        "client_sizes": summary.get("client_sizes"),
        "final_eval_loss": summary.get("final_eval_loss"),
        "malicious_share": _malicious_share(out),
        "train_seconds": summary.get("train_seconds"),
    }


def reducer_params(cfg: PipelineConfig, reducer: str, share: float) -> dict[str, Any]:
    p: SafetyPipelineConfig = cfg.params
    params = dict(p.reducer_params.get(reducer, {}))
    if reducer in ("krum", "multikrum", "dnc"):
        s = cfg.train.federation.sample_clients
        params.setdefault("f", max(1, int(math.floor(s * share + 0.5))))
    return params


def best_row(ctx: StageContext, cfg: PipelineConfig) -> tuple[str, float]:
    """The robust-reducer row with the highest safety rate on the first eval set."""
    p: SafetyPipelineConfig = cfg.params
    scores = {}
    for r in p.reducers:
        ev = ctx.summary_of(f"attack+{r}.evaluate")
        scores[f"attack+{r}"] = ev["safety"][p.eval_sets[0]]["rules"]["rate"]
    best = max(scores, key=lambda k: scores[k])
    return best, scores[best]


def _malicious_share(run_dir: Path) -> float | None:
    """Mean over rounds of the malicious clients' total share in the aggregate."""
    s = run_dir / "summary.json"
    m = run_dir / "metrics.jsonl"
    if not s.exists() or not m.exists():
        return None
    mal = {str(c) for c in json.loads(s.read_text()).get("malicious_clients") or []}
    if not mal:
        return None
    shares = []
    for line in m.read_text().splitlines():
        agg = json.loads(line).get("aggregation") or {}
        share = agg.get("share") or {}
        if share:
            shares.append(sum(v for c, v in share.items() if c in mal))
    return round(sum(shares) / len(shares), 4) if shares else None


def _pct(share: float) -> str:
    return f"{round(share * 100)}"
