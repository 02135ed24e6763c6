"""The bench collector and report: every cell's ``summary.json`` and ``eval.json`` into one table,
then one self-contained HTML file (tables, bar charts with 95% intervals, loss curves, the
diversity plots, each cell's config; images embedded as data URIs) and a markdown summary.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedloom.engine.outputs import SCHEMA_VERSION
from fedloom.experiment.collect import compare_items
from fedloom.experiment.compare import Comparison, compare
from fedloom.experiment.report import STYLE as KIT_STYLE
from fedloom.experiment.report import ResultTable, dot_plot, rows_html, uri
from fedloom.experiment.report import write_report as kit_report

MIN_SCHEMA = 3
"""Oldest run-summary schema the collector reads (version 3 added the round's aggregation)."""

METRICS: tuple[tuple[str, str, bool], ...] = (
    ("heldout_loss", "held-out loss", False),
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
        fl = {m: r for m, r in by.items() if m not in ("local", "base")}
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


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def bar_chart(rows: list[dict[str, Any]], fed: str, keys: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["federation"] == fed]
    keys = [k for k in keys if any(r.get(k) for r in mine)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 3.2))
    axes = [axes] if len(keys) <= 1 else list(axes)
    for ax, key in zip(axes, keys, strict=False):
        pts = [(r["method"], r[key]) for r in mine if r.get(key)]
        names = [p[0] for p in pts]
        vals = [p[1][0] for p in pts]
        err = [[v - p[1][1] for v, p in zip(vals, pts, strict=True)],
               [p[1][2] - v for v, p in zip(vals, pts, strict=True)]]  # fmt: skip
        colors = ["#999999" if n == "base" else "#cc6677" if n == "local" else "#4477aa"
                  for n in names]  # fmt: skip
        ax.bar(range(len(pts)), vals, yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(pts)))
        ax.set_xticklabels(names, rotation=60, fontsize=7, ha="right")
        ax.set_title(_label(key), fontsize=9)
        if vals:
            lo = min(v - e for v, e in zip(vals, err[0], strict=True))
            hi = max(v + e for v, e in zip(vals, err[1], strict=True))
            pad = (hi - lo) * 0.15 or 0.05
            ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    fig.suptitle(f"{fed} (bars: 95% intervals; grey base, red local)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def curve_chart(col: Collected, fed: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for c in col.cells:
        if c["federation"] != fed or not c["curve"]:
            continue
        rounds = [p["round"] for p in c["curve"]]
        label = f"{c['method']} s{c['seed']}"
        axes[0].plot(rounds, [p["train_loss"] for p in c["curve"]], marker=".", label=label)
        ev = [(p["round"], p["eval_loss"]) for p in c["curve"] if p["eval_loss"] is not None]
        if ev:
            axes[1].plot([e[0] for e in ev], [e[1] for e in ev], marker=".", label=label)
    axes[0].set_title("clients' training loss", fontsize=9)
    axes[1].set_title("held-out loss (global adapter)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("round")
    if axes[1].lines:
        axes[1].legend(fontsize=6, ncol=2)
    else:
        axes[1].text(0.5, 0.5, "not evaluated per round\n(eval.every: 0)", ha="center",
                     va="center", transform=axes[1].transAxes, fontsize=8)  # fmt: skip
    if axes[0].lines:
        axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(fed, fontsize=9)
    fig.tight_layout()
    return _png(fig)


# -- writing ----------------------------------------------------------------------------------


def _fmt(v: list[float] | None) -> str:
    if not v:
        return "—"
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def markdown(col: Collected, rows: list[dict[str, Any]], lines: list[str]) -> str:
    keys = [k for k in _keys_of(rows) if any(r.get(k) for r in rows)]
    out = ["# fedloom bench: results", ""]
    out.append(
        f"{len(col.cells)} cells over {len(col.federations())} federations; values are means "
        "with 95% intervals (one seed: the items' interval; several: the seeds' spread)."
    )
    for fed in col.federations():
        out += ["", f"## {fed}", ""]
        out.append("| method | " + " | ".join(_label(k) for k in keys) + " |")
        out.append("|---|" + "---|" * len(keys))
        for r in rows:
            if r["federation"] == fed:
                out.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    unscored = [c["folder"] for c in col.cells if metric_value(c["metrics"], "helpfulness") is None]
    out += ["", "## Federated vs local, and the best method", ""]
    out += [f"- {line}" for line in lines]
    if unscored:
        out += [
            "",
            f"Judge-rated metrics (MT-Bench, helpfulness) are unscored in {len(unscored)} cells: "
            "no judge was configured; their answers are saved in each cell's answers.jsonl.",
        ]
    if col.skipped:
        out += ["", "Not collected: " + "; ".join(col.skipped)]
    return "\n".join(out) + "\n"


def comparisons(ctx: Any, cfg: Any) -> list[Comparison]:
    """Per federation and metric, paired per item and pooled over seeds: every federated method
    against `local` (FedLLM-Bench's claim: federation beats training alone), and `local`
    against the base model."""
    b = cfg.params
    rows: list[Comparison] = []
    metrics = ["heldout_loss", "rougeL", *b.suites]
    for fed in b.federations:
        pairs = [(f"{fed}.{m}", m, f"{fed}.local", "local") for m in b.methods if m != "local"]
        if "local" in b.methods:
            pairs.append((f"{fed}.local", "local", f"base.{fed}", "base"))
        for key in metrics:
            for arm_stage, arm, ref_stage, ref in pairs:
                c = compare_items(
                    ctx, cfg.seeds, (arm_stage, key), (ref_stage, key), arm, ref,
                    metric=f"{fed} · {_label(key)}",
                )  # fmt: skip
                if c is not None:
                    rows.append(c)
    return rows


def html_report(
    col: Collected,
    rows: list[dict[str, Any]],
    lines: list[str],
    title: str,
    paired: list[Comparison] | None = None,
) -> str:
    keys = [k for k in _keys_of(rows) if any(r.get(k) for r in rows)]
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "pre{background:#f6f6f6;padding:.5em;font-size:11px;overflow:auto}"
        + KIT_STYLE
        + "</style>",
        "</head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{len(col.cells)} cells, federations: {e(', '.join(col.federations()))}; methods: "
        f"{e(', '.join(col.methods()))}. Values: mean [95% interval].</p>",
        "<h2>Federated vs local</h2><ul>",
        *[f"<li>{e(line)}</li>" for line in lines],
        "</ul>",
    ]
    if paired is not None:
        parts += [
            "<h2>Paired comparisons (per item, pooled over seeds)</h2>",
            "<p>Δ = arm − reference on the same items; 95% two-level bootstrap interval "
            "(seeds, then items); the verdict is read off the interval.</p>",
            rows_html(paired),
        ]
        if paired:
            parts.append(f"<img alt='per-seed differences' src='{uri(dot_plot(paired))}'>")
    for fed in col.federations():
        parts.append(f"<h2 id='{e(fed)}'>{e(fed)}</h2>")
        st = col.stats.get(fed)
        if st:
            s = st["summary"]
            parts.append(
                f"<p>{s['clients']} clients, {s['samples']} training examples, "
                f"{s['per_client'][0]} ± {s['per_client'][1]} per client "
                f"(range {s['per_client_range'][0]}–{s['per_client_range'][1]}); instruction "
                f"{s['instruction_length'][0]} ± {s['instruction_length'][1]}, response "
                f"{s['response_length'][0]} ± {s['response_length'][1]} {e(s['length_unit'])}."
                f" Published: {e(json.dumps(s.get('published') or {}))}</p>"
            )
        parts.append("<table><tr><th>method</th>" + "".join(f"<th>{e(_label(k))}</th>" for k in keys) + "</tr>")  # fmt: skip
        for r in rows:
            if r["federation"] == fed:
                cells = "".join(f"<td>{e(_fmt(r.get(k)))}</td>" for k in keys)
                parts.append(f"<tr><td>{e(r['method'])}</td>{cells}</tr>")
        parts.append("</table>")
        parts.append(f"<img alt='{e(fed)} metrics' src='{bar_chart(rows, fed, keys)}'>")
        parts.append(f"<img alt='{e(fed)} loss curves' src='{curve_chart(col, fed)}'>")
        d = col.stats_dirs.get(fed)
        if d is not None:
            parts.append("<h3>Diversity</h3>")
            for name in ("quantity", "lengths", "languages", "embedding"):
                p = d / f"{name}.png"
                if p.exists():
                    parts.append(
                        f"<img alt='{e(fed)} {name}' style='max-width:49%' src='{_file_png(p)}'>"
                    )
    parts.append("<h2>Configs</h2>")
    for c in col.cells:
        parts.append(
            f"<details><summary>{e(c['folder'])}</summary><pre>{e(c['config'])}</pre></details>"
        )
    if col.skipped:
        parts.append("<p>Not collected: " + e("; ".join(col.skipped)) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    out: Path, cfg: Any, folder: Path, paired: list[Comparison] | None = None
) -> dict[str, Any]:
    """Collect ``out``, write ``report.html`` and ``report.md`` there (and in ``folder``);
    with ``paired`` (the kit's comparisons), also the kit's ``table.md`` / ``results.json``."""
    col = collect(out)
    rows = grid_table(col)
    lines = verdicts(rows)
    if paired is not None:
        kit_report(folder, ResultTable(f"fedloom bench — {out.name}", paired))
    page = html_report(col, rows, lines, f"fedloom bench — {out.name}", paired)
    md = markdown(col, rows, lines)
    for where in (out, folder):
        (where / "report.html").write_text(page)
        (where / "report.md").write_text(md)
    (folder / "table.json").write_text(json.dumps(rows, indent=2))
    return {"cells": len(col.cells), "skipped": col.skipped, "verdicts": lines}
