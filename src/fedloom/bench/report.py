"""The bench report: one self-contained HTML file (tables, bar charts with 95% intervals, loss curves, the
diversity plots, each cell's config; images embedded as data URIs) and a markdown summary.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from fedloom.bench.collect import (
    METRICS,
    Collected,
    _keys_of,
    _label,
    collect,
    comparisons,
    cost_table,
    grid_table,
    metric_value,
    paired_difference,
    verdicts,
)
from fedloom.experiment.compare import Comparison
from fedloom.experiment.report import STYLE as KIT_STYLE
from fedloom.experiment.report import ResultTable, dot_plot, rows_html, uri
from fedloom.experiment.report import write_report as kit_report

__all__ = [
    "METRICS",
    "Collected",
    "collect",
    "comparisons",
    "grid_table",
    "paired_difference",
    "verdicts",
    "write_report",
]


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
        colors = ["#999999" if n == "base" else "#cc6677" if n.startswith("local") else "#4477aa"
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


def cost_markdown(costs: list[dict[str, Any]]) -> str:
    """The cost table: per federation and method, averaged over its cells (— where a figure
    was not recorded: training tokens are recorded from run schema 6)."""

    def f(v: float | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [
        "| federation | method | cells | min / cell | training s | steps | train tok/s | "
        "eval s / model | held-out items/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        lines.append(
            f"| {c['federation']} | {c['method']} | {c['cells']} | {f(c['minutes'], '.1f')} | "
            f"{f(c['train_seconds'], '.0f')} | {f(c['steps'], '.1f')} | "
            f"{f(c['train_tokens_per_s'], '.0f')} | {f(c['eval_seconds_per_model'], '.0f')} | "
            f"{f(c['heldout_items_per_s'], '.2f')} |"
        )
    return "\n".join(lines)


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
    out += ["", "## Where the time went", "", cost_markdown(cost_table(col))]
    unscored = [c["folder"] for c in col.cells if metric_value(c["metrics"], "helpfulness") is None]
    out += ["", "## Federated vs local, and the best method", ""]
    out += [f"- {line}" for line in lines]
    if unscored:
        out += [
            "",
            f"Judge-rated metrics (MT-Bench, helpfulness) are unscored in {len(unscored)} cells: "
            "no judge was configured; their answers are saved in each cell's answers.jsonl.",
        ]
    notes = {
        note
        for c in col.cells
        for key in ("helpfulness", "mtbench")
        if (note := (c["metrics"].get(key) or {}).get("validity"))
    }
    if notes:
        out += ["", "Judge-rated metrics, with the judge's measured validity:", ""]
        out += [f"- {n}" for n in sorted(notes)]
    if col.skipped:
        out += ["", "Not collected: " + "; ".join(col.skipped)]
    return "\n".join(out) + "\n"


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
