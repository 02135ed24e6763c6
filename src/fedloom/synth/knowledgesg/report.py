"""The KnowledgeSG method table: one row per method from its stages' summaries (utility,
canary leakage, ε, data quality, time), as markdown, JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedloom.experiment.collect import compare_items
from fedloom.experiment.compare import Comparison
from fedloom.experiment.report import ResultTable, stage_costs, write_stage_report
from fedloom.judges.validate import validity_note
from fedloom.pipeline.runner import PipelineConfig, StageContext, stage_key
from fedloom.synth.knowledgesg.methods import KSG_METHODS


def method_row(ctx: StageContext, cfg: PipelineConfig, name: str, seed: int) -> dict[str, Any]:
    """One seed's row of the wide method table (utility, leakage, ε, data quality, time)."""
    m = KSG_METHODS[name]
    p = cfg.params
    stages = [f"{name}.write", f"{name}.refine", f"{name}.train", f"{name}.evaluate"]
    done = {s.rsplit(".", 1)[1]: ctx.record_of(s, seed) for s in stages if ctx.has(s, seed)}
    ev = done["evaluate"]["summary"]
    skipped = "skipped" in ev  # nothing survived to train on: no model to score
    held = ev.get("heldout_loss", {})
    row: dict[str, Any] = {
        "method": name,
        "leaky": p.leaky(m) or m.writer is None,
        "pairs": done["train"]["summary"]["pairs"],
        "heldout_diff": held.get("diff"),
        "heldout_ci95": held.get("ci95"),
        "heldout_tuned": held.get("tuned"),
        "canary_exposure": None if skipped else ev["canaries"]["exposure_mean"],
        "canaries_extracted": None if skipped else ev["canaries"]["extracted"],
        "seconds": round(sum(d["seconds"] for d in done.values()), 1),
    }
    if "suite" in ev:
        key = "accuracy" if "accuracy" in ev["suite"]["tuned"] else next(iter(ev["suite"]["tuned"]))
        row["suite"] = p.suite
        row["suite_base"] = ev["suite"]["base"].get(key)
        row["suite_tuned"] = ev["suite"]["tuned"].get(key)
        row["suite_n"] = ev["suite"]["tuned"].get("n")
    if "freeform" in ev:
        row["freeform_rating"] = ev["freeform"].get("mean")
    if "refine" in done:
        ref = done["refine"]["summary"]
        row |= {
            "canaries_in_synthetic_exact": ref["canaries_in_synthetic"]["exact"],
            "canaries_in_synthetic_fuzzy": ref["canaries_in_synthetic"]["fuzzy"],
            "kept_rate": ref["kept_rate"],
            "acceptance_rate": ref["acceptance_rate"],
            "frechet_distance": ref.get("frechet_distance"),
            "distinct_2": ref.get("distinct_2"),
            "answered_by": ref["answered_by"],
        }
    else:  # non-private trains on the private data, canaries included
        row |= {"canaries_in_synthetic_exact": None, "canaries_in_synthetic_fuzzy": None}
    if m.writer == "dp":
        w = ctx.record_of("writer-dp", seed)
        eps = w["summary"]["epsilon_by_client"] or {}
        row["epsilon"] = round(max(eps.values()), 3) if eps else None
        row["seconds"] += w["seconds"]
    else:
        row["epsilon"] = None  # no formal guarantee
        if m.writer == "plain":
            row["seconds"] += ctx.record_of("writer-plain", seed)["seconds"]
    return row


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | pairs | held-out Δloss [95% CI] | suite base→tuned | canaries in data "
        "(exact/fuzzy) | exposure (bits) | extracted | ε | FD | distinct-2 | accepted | "
        "free-form (judge, 1-10) | time (min) |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ci = r["heldout_ci95"]
        suite = f"{_fmt(r.get('suite_base'))}→{_fmt(r.get('suite_tuned'))}" if "suite" in r else "—"
        data = (
            "all (trains on them)"
            if r["method"] == "non-private"
            else f"{r['canaries_in_synthetic_exact']}/{r['canaries_in_synthetic_fuzzy']}"
        )
        eps = _fmt(r["epsilon"], 2) if r["epsilon"] is not None else "∞"
        name = r["method"] + (" (leaky)" if r["leaky"] and r["method"] != "non-private" else "")
        held = (
            "— (no model)"
            if ci is None
            else f"{r['heldout_diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        )
        lines.append(
            f"| {name} | {r['pairs']} | {held} "
            f"| {suite} | {data} | {_fmt(r['canary_exposure'], 2)} | {_fmt(r['canaries_extracted'])} "
            f"| {eps} | {_fmt(r.get('frechet_distance'), 3)} | {_fmt(r.get('distinct_2'), 3)} "
            f"| {_fmt(r.get('acceptance_rate'), 2)} | {_fmt(r.get('freeform_rating'), 2)} "
            f"| {r['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["heldout_ci95"] is not None]
    names = [r["method"] for r in rows]
    diffs = [r["heldout_diff"] for r in rows]
    lo = [r["heldout_diff"] - r["heldout_ci95"][0] for r in rows]
    hi = [r["heldout_ci95"][1] - r["heldout_diff"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.barh(names, diffs, xerr=[lo, hi], color="#4c72b0")
    a.axvline(0, color="k", lw=0.8)
    a.set_xlabel("held-out loss − base (lower is better), 95% CI")
    a.invert_yaxis()
    b.barh(names, [r["canary_exposure"] or 0 for r in rows], color="#c44e52")
    b.set_xlabel("canary exposure of the final model (bits)")
    b.invert_yaxis()
    b.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def comparisons(ctx: StageContext, cfg: PipelineConfig) -> list[Comparison]:
    """Held-out loss, paired on the same items and pooled over seeds: every method against the
    base model; every synthetic method against non-private (does it approach it?); each
    KnowledgeSG method against the other synthetic methods of its privacy class (does it beat
    them?) and against `base-ksg`, the same steps with the base model as the writer (what does
    the writer adapter add?)."""
    methods = list(cfg.params.methods)
    rows: list[Comparison] = []

    def add(
        arm: str, ref: str, ref_file: str = "heldout.tuned", ref_name: str | None = None
    ) -> None:
        c = compare_items(
            ctx, cfg.seeds, (f"{arm}.evaluate", "heldout.tuned"), (f"{ref}.evaluate", ref_file),
            arm, ref_name or ref, metric="held-out loss",
        )  # fmt: skip
        if c is not None:
            rows.append(c)

    for m in methods:
        add(m, m, "heldout.base", "base")
    synthetic = [m for m in methods if KSG_METHODS[m].writer is not None]
    if "non-private" in methods:
        for m in synthetic:
            add(m, "non-private")
            judged = compare_items(
                ctx, cfg.seeds, (f"{m}.evaluate", "freeform"), ("non-private.evaluate", "freeform"),
                m, "non-private", metric="free-form rating (judge, 1-10)",
            )  # fmt: skip
            if judged is not None:  # with `judge`: the answers rated against their references
                rows.append(judged)
    for m in synthetic:
        if m.endswith("ksg") and m != "base-ksg" and "base-ksg" in methods:
            add(m, "base-ksg")  # the control: what the (DP) writer adapter adds
        if m.endswith("ksg") and m != "base-ksg":
            dp = KSG_METHODS[m].writer == "dp"
            for other in synthetic:
                if (
                    other != m
                    and not other.endswith("ksg")
                    and (KSG_METHODS[other].writer == "dp") == dp
                ):
                    add(m, other)
    return rows


def write_table(ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
    """The pooled comparisons (the kit's report) and, per seed, the wide method table."""
    wide = {
        s: [method_row(ctx, cfg, m, s) for m in cfg.params.methods if ctx.has(f"{m}.evaluate", s)]
        for s in cfg.seeds
    }
    extra = "".join(
        f"\n## Seed {s}: every measure\n\n{table_markdown(r)}" for s, r in wide.items() if r
    )
    first = next((r for r in wide.values() if r), [])
    if first:
        plot(first, ctx.folder / "table.png")
    keys = [
        stage_key(f"{m}.{k}", s)
        for s in cfg.seeds
        for m in cfg.params.methods
        for k in ("write", "train", "evaluate")
    ]
    table = ResultTable(
        "KnowledgeSG — synthetic data instead of private data",
        comparisons(ctx, cfg),
        intro=f"Seeds {cfg.seeds}. Held-out loss on the same private-like items; every row is "
        "paired per item and pooled over seeds."
        + (
            f" Free-form ratings: {validity_note(cfg.params.judge.label(), 'reference')}."
            if cfg.params.judge is not None and cfg.params.freeform
            else ""
        ),
        plots=[ctx.folder / "table.png"],
        costs=stage_costs(ctx, keys),
        extra_md=extra,
    )
    summary = write_stage_report(ctx, table)
    (ctx.folder / "methods.json").write_text(
        json.dumps({str(s): r for s, r in wide.items()}, indent=2)
    )
    return summary | {"methods": {str(s): r for s, r in wide.items()}}
