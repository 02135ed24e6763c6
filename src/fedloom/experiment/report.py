"""The report every pipeline writes: one self-contained HTML page (images as data URIs), a
``table.md`` and a ``results.json``, from the same :class:`ResultTable`.

A result table is a list of :class:`~fedloom.experiment.Comparison` rows (an arm against its
reference, paired on the same items, pooled over seeds, with a verdict), plus what the reader
needs to trust it: where the data came from (kept / dropped by reason), what each stage cost,
the pipeline's own plots and the configs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.experiment.compare import Comparison


@dataclass
class ResultTable:
    title: str
    rows: list[Comparison]
    intro: str = ""
    """One paragraph: what was compared, at what scale."""
    notes: list[str] = field(default_factory=list)
    """Lines under the table (what a row means, what was not measured and why)."""
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per data set: counts kept / dropped by reason."""
    costs: list[dict[str, Any]] = field(default_factory=list)
    """Per stage: seconds and its own rates (tokens/s, items/s)."""
    plots: list[Path] = field(default_factory=list)
    """The pipeline's own PNG plots, embedded after the table."""
    configs: dict[str, Any] = field(default_factory=dict)
    extra_md: str = ""
    """Pipeline-specific markdown appended to table.md (e.g. its own wider table)."""


def _num(x: float, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_table(rows: Sequence[Comparison]) -> str:
    lines = [
        "| arm | reference | metric | arm | reference | Δ (arm − ref) [95% CI] | verdict | Δ per seed | items |",
        "|---|---|---|---:|---:|---|---|---|---:|",
    ]
    for c in rows:
        digits = c.digits()
        better = "lower" if c.lower_is_better else "higher"
        per = ", ".join(f"s{s}: {r.diff:+.{digits}f}" for s, r in sorted(c.per_seed.items()))
        lines.append(
            f"| {c.arm} | {c.reference} | {c.metric} ({better} is better) | "
            f"{_num(c.arm_mean, max(3, digits))} | {_num(c.reference_mean, max(3, digits))} | {c.cell()} | "
            f"**{c.verdict}** | {per} | {c.n_items}"
            + (f" (+{c.unpaired} unpaired)" if c.unpaired else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def dot_plot(rows: Sequence[Comparison]) -> bytes:
    """Per row: each seed's mean difference (dots), the pooled difference and its 95% interval
    (bar), and zero; one panel per metric so scales stay comparable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(c.metric for c in rows))
    heights = [max(1.2, 0.45 * sum(c.metric == m for c in rows) + 0.8) for m in metrics]
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(7.5, sum(heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    colours = {"better": "#1a7f37", "worse": "#cf222e", "unresolved": "#6e7781"}
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        mine = [c for c in rows if c.metric == metric]
        for y, c in enumerate(mine):
            col = colours[c.verdict]
            ax.plot([c.low, c.high], [y, y], color=col, lw=3, alpha=0.5)
            ax.plot([c.diff], [y], marker="D", color=col, ms=7)
            ds = [r.diff for r in c.per_seed.values()]
            ax.plot(ds, [y + 0.18] * len(ds), "o", color="black", ms=4, alpha=0.7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(mine)), [f"{c.arm} vs {c.reference}" for c in mine], fontsize=8)
        ax.invert_yaxis()
        low_good = mine[0].lower_is_better
        ax.set_title(
            f"{metric}: Δ arm − reference ({'lower' if low_good else 'higher'} is better); "
            "dots = seeds, bar = pooled 95% CI",
            fontsize=9,
        )
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _kv_table(rows: dict[str, dict[str, Any]], e: Any) -> str:
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    head = "".join(f"<th>{e(k)}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{e(name)}</td>"
        + "".join(f"<td>{e(_cell(r.get(k)))}</td>" for k in keys)
        + "</tr>"
        for name, r in rows.items()
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


STYLE = (
    "td.l{text-align:left}.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}"
    ".unresolved{color:#6e7781}"
)
"""CSS for the verdict cells (pages that embed :func:`rows_html` add it to their style)."""


def rows_html(rows: Sequence[Comparison]) -> str:
    """The comparison rows as an HTML table (verdict cells classed for colour)."""
    e = html.escape
    if not rows:
        return "<p>No comparison could be made yet (no arm finished).</p>"
    parts = [
        "<table><tr><th>arm</th><th>reference</th><th>metric</th><th>arm</th>"
        "<th>reference</th><th>Δ [95% CI]</th><th>verdict</th><th>Δ per seed</th>"
        "<th>items</th></tr>"
    ]
    for c in rows:
        d = c.digits()
        per = ", ".join(f"s{s}: {r.diff:+.{d}f}" for s, r in sorted(c.per_seed.items()))
        parts.append(
            f"<tr><td class='l'>{e(c.arm)}</td><td class='l'>{e(c.reference)}</td>"
            f"<td class='l'>{e(c.metric)}</td>"
            f"<td>{_num(c.arm_mean, d)}</td><td>{_num(c.reference_mean, d)}</td>"
            f"<td>{e(c.cell())}</td><td class='{c.verdict}'>{c.verdict}</td>"
            f"<td>{e(per)}</td><td>{c.n_items}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def html_page(t: ResultTable, plot: bytes | None) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(t.title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        + STYLE
        + "pre{background:#f6f6f6;padding:.5em;font-size:11px;overflow:auto}</style>",
        "</head><body>",
        f"<h1>{e(t.title)}</h1>",
    ]
    if t.intro:
        parts.append(f"<p>{e(t.intro)}</p>")
    parts.append("<h2>Results</h2>")
    parts.append(rows_html(t.rows))
    if t.notes:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in t.notes) + "</ul>")
    if plot is not None:
        parts.append(f"<img alt='per-seed differences' src='{uri(plot)}'>")
    for p in t.plots:
        if p.exists():
            parts.append(f"<img alt='{e(p.stem)}' src='{uri(p.read_bytes())}'>")
    if t.provenance:
        parts.append("<h2>Data: kept and dropped</h2>" + _kv_table(t.provenance, e))
    if t.costs:
        parts.append(
            "<h2>Where the time went</h2>"
            + _kv_table(
                {
                    str(c.get("stage")): {k: v for k, v in c.items() if k != "stage"}
                    for c in t.costs
                },
                e,
            )  # fmt: skip
        )
    if t.configs:
        parts.append("<h2>Configs</h2>")
        for name, cfg in t.configs.items():
            text = cfg if isinstance(cfg, str) else json.dumps(cfg, indent=1, ensure_ascii=False)
            parts.append(f"<details><summary>{e(name)}</summary><pre>{e(text)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: Path, t: ResultTable) -> dict[str, Any]:
    """Write ``report.html``, ``table.md`` and ``results.json`` into ``folder``; returns the
    summary a table stage saves (rows with their verdicts)."""
    folder.mkdir(parents=True, exist_ok=True)
    plot = dot_plot(t.rows) if t.rows else None
    if plot is not None:
        (folder / "seeds.png").write_bytes(plot)
    md = f"# {t.title}\n\n" + (f"{t.intro}\n\n" if t.intro else "")
    md += markdown_table(t.rows) if t.rows else "No comparison could be made yet.\n"
    md += "".join(f"\n- {n}" for n in t.notes) + ("\n" if t.notes else "")
    if t.extra_md:
        md += "\n" + t.extra_md
    (folder / "table.md").write_text(md)
    results = {
        "title": t.title,
        "rows": [c.as_dict() for c in t.rows],
        "notes": t.notes,
        "provenance": t.provenance,
        "costs": t.costs,
    }
    (folder / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    (folder / "report.html").write_text(html_page(t, plot))
    return {
        "rows": [
            {
                "arm": c.arm,
                "reference": c.reference,
                "metric": c.metric,
                "diff": c.diff,
                "ci95": [c.low, c.high],
                "verdict": c.verdict,
                "seeds": c.seeds,
            }
            for c in t.rows
        ],  # fmt: skip
        "report": str(folder / "report.html"),
    }


def write_stage_report(ctx: Any, t: ResultTable) -> dict[str, Any]:
    """A pipeline's table stage: :func:`write_report` into the stage's folder, with the
    pipeline's resolved config among the configs, and ``table.md`` printed."""
    t.configs.setdefault("pipeline", (ctx.out / "pipeline.yaml").read_text())
    summary = write_report(ctx.folder, t)
    ctx.console.print((ctx.folder / "table.md").read_text())
    return summary


def stage_costs(ctx: Any, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Seconds per finished stage (from its ``done.json``) and the rates its summary reports."""
    rates = ("tokens_per_second", "train_tokens_per_second", "items_per_second")
    out = []
    for key in keys:
        if key not in ctx.stage_folders:
            continue
        done = ctx.record_of(key)
        row: dict[str, Any] = {"stage": key, "seconds": done.get("seconds")}
        s = done.get("summary") or {}
        row |= {k: s[k] for k in rates if isinstance(s, dict) and k in s}
        out.append(row)
    return out
