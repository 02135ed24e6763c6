"""The bench collector: every cell's ``summary.json``, ``eval.json`` and per-item scores into
one table, the "federated vs local" verdicts, and the kit's paired rows."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedloom.engine.outputs import SCHEMA_VERSION
from fedloom.experiment.collect import compare_items
from fedloom.experiment.compare import Comparison, compare

MIN_SCHEMA = 3
"""Oldest run-summary schema the collector reads (version 3 added the round's aggregation)."""

METRICS: tuple[tuple[str, str, bool], ...] = (
    ("heldout_loss", "held-out loss", False),
    ("dpo_loss", "held-out DPO loss", False),
    ("reward_accuracy", "reward accuracy", True),
    ("rougeL", "ROUGE-L", True),
    ("helpfulness", "helpfulness (judge, 1-10)", True),
    ("mtbench", "MT-Bench (judge, 1-10)", True),
    ("advbench", "AdvBench safety rate", True),
    ("mmlu", "MMLU accuracy", True),
    ("medmcqa", "MedMCQA accuracy", True),
)
"""(key, label, higher is better); suites not listed are shown under their own name."""


def metric_value(metrics: dict[str, Any], key: str) -> tuple[float, float, float] | None:
    """(value, ci95 low, ci95 high) of a metric in a cell's ``eval.json``; None when absent or
    unscored (no judge)."""
    from fedloom.eval.suites import HEADLINE_KEYS

    m = metrics.get(key)
    if not isinstance(m, dict):
        return None
    name = "mean" if "mean" in m else next((k for k in HEADLINE_KEYS if k in m), None)
    if name is None or name == "answered" or m.get(name) is None:
        return None
    v = float(m[name])
    if math.isnan(v):
        return None
    return v, float(m.get("ci95_low", v)), float(m.get("ci95_high", v))


@dataclass
class Collected:
    cells: list[dict[str, Any]] = field(default_factory=list)
    base: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats_dirs: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """Folders the collector could not read, with the reason."""

    def federations(self) -> list[str]:
        seen: list[str] = []
        for c in [*self.base, *self.cells]:
            if c["federation"] not in seen:
                seen.append(c["federation"])
        return seen

    def methods(self) -> list[str]:
        seen: list[str] = []
        for c in self.cells:
            if c["method"] not in seen:
                seen.append(c["method"])
        return seen


def _read_metrics_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(out: Path) -> Collected:
    """Read every stage folder of a bench run under ``out``."""
    col = Collected()
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        settings_path = folder / "config.yaml"
        if not settings_path.exists():
            continue
        settings = yaml.safe_load(settings_path.read_text()) or {}
        kind = settings.get("kind")
        if "federation" in settings and kind is None and (folder / "stats.json").exists():
            col.stats[settings["federation"]] = json.loads((folder / "stats.json").read_text())
            col.stats_dirs[settings["federation"]] = folder
            continue
        if kind not in ("cell", "base"):
            continue
        ev_path = folder / "eval.json"
        if not ev_path.exists():
            col.skipped.append(f"{folder.name}: no eval.json (not finished)")
            continue
        row = dict(settings) | {"folder": folder.name, "metrics": json.loads(ev_path.read_text())}
        done = folder / "done.json"
        stage_seconds = json.loads(done.read_text()).get("seconds") if done.exists() else None
        held = row["metrics"].get("heldout_loss") or row["metrics"].get("dpo_loss") or {}
        row["cost"] = {"stage_seconds": stage_seconds, "items": held.get("n"), "models": 1}
        if kind == "cell":
            summary_path = folder / "run" / "summary.json"
            if not summary_path.exists():
                col.skipped.append(f"{folder.name}: no run/summary.json")
                continue
            summary = json.loads(summary_path.read_text())
            version = summary.get("schema_version")
            if not isinstance(version, int) or not MIN_SCHEMA <= version <= SCHEMA_VERSION:
                col.skipped.append(
                    f"{folder.name}: summary schema_version {version!r}, this fedloom reads "
                    f"{MIN_SCHEMA}..{SCHEMA_VERSION}"
                )
                continue
            rounds = _read_metrics_rows(folder / "run" / "metrics.jsonl")
            tokens: list[int] = [r["client_tokens"] for r in rounds if r.get("client_tokens")]
            row["cost"] |= {
                "train_seconds": summary.get("train_seconds"),
                "run_seconds": summary.get("wall_seconds"),
                "steps": sum(sum((r.get("client_steps") or {}).values()) for r in rounds),
                "tokens": sum(tokens) if rounds and len(tokens) == len(rounds) else None,
                "models": len(list((folder / "clients").glob("client_*"))) or 1,
            }
            row |= {
                "summary": {
                    k: summary.get(k)
                    for k in (
                        "num_clients",
                        "rounds_completed",
                        "train_seconds",
                        "bytes_up_total",
                        "final_eval_loss",
                        "base_eval_loss",
                    )
                },
                "curve": [
                    {
                        "round": r["round"],
                        "train_loss": r.get("train_loss"),
                        "eval_loss": r.get("eval_loss"),
                    }
                    for r in rounds
                ],
                "config": (folder / "run" / "config.yaml").read_text()
                if (folder / "run" / "config.yaml").exists()
                else "",
            }
            col.cells.append(row)
        else:
            col.base.append(row)
    return col


def grid_table(col: Collected) -> list[dict[str, Any]]:
    """One row per (federation, method) with every metric averaged over seeds (interval: the
    seed-0... cell's own when one seed, else the spread of the seeds' means)."""
    rows: list[dict[str, Any]] = []
    for fed in col.federations():
        groups: dict[str, list[dict[str, Any]]] = {}
        for c in col.base:
            if c["federation"] == fed:
                groups.setdefault("base", []).append(c)
        for c in col.cells:
            if c["federation"] == fed:
                groups.setdefault(c["method"], []).append(c)
        best = [b for c in groups.get("local", []) if (b := best_client_cell(c))["metrics"]]
        if best:  # the local cells' best clients (each chosen on the scored items)
            groups["local-best"] = best
        for method, cells in groups.items():
            row: dict[str, Any] = {"federation": fed, "method": method, "seeds": len(cells)}
            # per-item held-out losses by seed, for paired comparisons (same records, same order)
            row["_items"] = {
                c.get("seed", 0): c["metrics"]["heldout_loss"]["items"]
                for c in cells
                if isinstance(c["metrics"].get("heldout_loss"), dict)
                and c["metrics"]["heldout_loss"].get("items")
            }
            for key in _metric_keys(col):
                vals = [v for c in cells if (v := metric_value(c["metrics"], key)) is not None]
                if not vals:
                    row[key] = None
                elif len(vals) == 1:
                    row[key] = list(vals[0])
                else:
                    from fedloom.bench.evaluate import mean_interval

                    mi = mean_interval([v[0] for v in vals])
                    row[key] = [mi["mean"], mi["ci95_low"], mi["ci95_high"]]
            rows.append(row)
    return rows


def cost_table(col: Collected) -> list[dict[str, Any]]:
    """Where the time went, per federation and method (base: the scoring alone), averaged over
    the cells: minutes per cell, training seconds and optimizer steps, training tokens/s where
    the rounds recorded tokens, and evaluation seconds per scored model (the stage's time less
    its run's) with the held-out items scored per second."""

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    out: list[dict[str, Any]] = []
    for fed in col.federations():
        groups: dict[str, list[dict[str, Any]]] = {}
        for c in [*col.base, *col.cells]:
            if c["federation"] == fed:
                groups.setdefault(c.get("method", "base"), []).append(c["cost"])
        for method, costs in groups.items():
            stage = [c["stage_seconds"] for c in costs if c.get("stage_seconds")]
            evals = [
                ((c["stage_seconds"] - (c.get("run_seconds") or 0.0)) / c["models"], c)
                for c in costs
                if c.get("stage_seconds")
            ]
            tok = [c["tokens"] / c["train_seconds"] for c in costs
                   if c.get("tokens") and c.get("train_seconds")]  # fmt: skip
            out.append({
                "federation": fed,
                "method": method,
                "cells": len(costs),
                "minutes": (m / 60 if (m := mean(stage)) is not None else None),
                "train_seconds": mean([c["train_seconds"] for c in costs if c.get("train_seconds")]),
                "steps": mean([float(c["steps"]) for c in costs if c.get("steps") is not None]),
                "train_tokens_per_s": mean(tok),
                "eval_seconds_per_model": mean([e for e, _ in evals]),
                "heldout_items_per_s": mean([c["items"] / e for e, c in evals if e > 0 and c.get("items")]),
            })  # fmt: skip
    return out


def best_client_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A `local` cell as its best client alone: each metric's ``best_client`` mean (metrics
    without one are left out; no per-item scores: the paired rows read them from ``items/``)."""
    metrics = {
        k: {"mean": m["best_client"]["mean"]}
        for k, m in cell["metrics"].items()
        if isinstance(m, dict) and isinstance(m.get("best_client"), dict)
    }
    return {k: v for k, v in cell.items() if k != "metrics"} | {"metrics": metrics}


def _metric_keys(col: Collected) -> list[str]:
    keys: list[str] = []
    for c in [*col.base, *col.cells]:
        for k in c["metrics"]:
            if k not in keys:
                keys.append(k)
    order = [k for k, _, _ in METRICS]
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def _label(key: str) -> str:
    return next((lab for k, lab, _ in METRICS if k == key), key)


def _higher_better(key: str) -> bool:
    return next((hb for k, _, hb in METRICS if k == key), True)


def paired_difference(a: dict[Any, list[float]], b: dict[Any, list[float]]) -> list[float] | None:
    """Mean per-item difference a - b (items paired by position, pooled over the seeds both
    have) with the kit's 95% two-level bootstrap interval (:func:`fedloom.experiment.compare`);
    None when they share no seed with equally many items."""
    shared = [s for s in sorted(set(a) & set(b)) if len(a[s]) == len(b[s]) and a[s]]
    if not shared:
        return None
    c = compare({s: a[s] for s in shared}, {s: b[s] for s in shared})
    return [c.diff, c.low, c.high]


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The "federated beats local" check, per federation and metric: which methods beat local
    with non-overlapping 95% intervals, which are ahead only within the noise; and which method
    is best per metric (is there one winner everywhere?). For held-out loss, where per-item
    losses are saved, also the paired test: the mean per-item difference from local and whether
    its 95% interval excludes 0."""
    out: list[str] = []
    for fed in dict.fromkeys(r["federation"] for r in rows):
        by = {r["method"]: r for r in rows if r["federation"] == fed}
        local = by.get("local")
        fl = {m: r for m, r in by.items() if m not in ("local", "local-best", "base")}
        for key in [k for k in _keys_of(rows) if any(r.get(k) for r in fl.values())]:
            hb = _higher_better(key)
            scored = {m: r[key] for m, r in fl.items() if r.get(key)}
            if not scored:
                continue
            best = (max if hb else min)(scored, key=lambda m: scored[m][0])
            line = f"{fed} · {_label(key)}: best {best} {scored[best][0]:.3f}"
            if local is not None and local.get(key):
                lv, llo, lhi = local[key]
                ahead = [m for m, v in scored.items() if (v[0] > lv) == hb and v[0] != lv]
                clear = [m for m in ahead if (scored[m][1] > lhi if hb else scored[m][2] < llo)]
                line += (
                    f"; local {lv:.3f}; {len(ahead)}/{len(scored)} federated methods ahead of "
                    f"local, {len(clear)} with non-overlapping 95% intervals"
                    + (f" ({', '.join(clear)})" if clear else "")
                )
            if key == "heldout_loss" and local is not None and local.get("_items"):
                paired = {
                    m: d
                    for m, r in fl.items()
                    if (d := paired_difference(r.get("_items") or {}, local["_items"])) is not None
                }
                if paired:
                    better = [m for m, d in paired.items() if d[2] < 0]
                    worse = [m for m, d in paired.items() if d[1] > 0]
                    d = paired[best] if best in paired else next(iter(paired.values()))
                    line += (
                        f"; paired per item vs local: {best if best in paired else 'first'} "
                        f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}], {len(better)}/{len(paired)} "
                        "significantly lower" + (f" ({', '.join(better)})" if better else "")
                        + (f", {len(worse)} significantly higher ({', '.join(worse)})" if worse else "")
                    )  # fmt: skip
            out.append(line)
    return out


def _keys_of(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if (
                k not in ("federation", "method", "seeds")
                and not k.startswith("_")
                and k not in keys
            ):
                keys.append(k)
    return keys


# -- figures ----------------------------------------------------------------------------------


def comparisons(ctx: Any, cfg: Any) -> list[Comparison]:
    """Per federation and metric, paired per item and pooled over seeds: every federated method
    against `local` (FedLLM-Bench's claim: federation beats training alone), and `local`
    against the base model."""
    b = cfg.params
    rows: list[Comparison] = []
    metrics = ["heldout_loss", "dpo_loss", "reward_accuracy", "rougeL", *b.suites]
    for fed in b.federations:
        fl = [m for m in b.methods_of(fed) if m != "local"]
        # (arm stage, arm item suffix, arm, reference stage, reference item suffix, reference)
        pairs = [(f"{fed}.{m}", "", m, f"{fed}.local", "", "local") for m in fl]
        if "local" in b.methods_of(fed):
            pairs += [(f"{fed}.{m}", "", m, f"{fed}.local", ".best", "local-best") for m in fl]
            pairs.append((f"{fed}.local", "", "local", f"base.{fed}", "", "base"))
        for key in metrics:
            for arm_stage, arm_sfx, arm, ref_stage, ref_sfx, ref in pairs:
                c = compare_items(
                    ctx, cfg.seeds, (arm_stage, key + arm_sfx), (ref_stage, key + ref_sfx),
                    arm, ref, metric=f"{fed} · {_label(key)}",
                )  # fmt: skip
                if c is not None:
                    rows.append(c)
    return rows
