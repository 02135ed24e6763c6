"""The safety table (markdown + JSON) and its two plots: the stealth plot (each client's update
norm and cosine to the mean update, per round, benign vs malicious) and the malicious-share
sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedloom.experiment.collect import compare_items
from fedloom.experiment.compare import Comparison
from fedloom.experiment.report import ResultTable, stage_costs, write_stage_report
from fedloom.judges.validate import validity_note
from fedloom.pipeline.runner import PipelineConfig, StageContext
from fedloom.safety.config import SafetyPipelineConfig

SELECTION_NOTE = {
    "none": " Aligned and defense refusals kept as the generator wrote them (no judge selected "
    "them, as in the paper).",
    "safety": " Aligned and defense refusals selected by the LLM safety judge: its own column "
    "is not independent of that selection; the keyword columns are.",
    "rules-prefix": " Aligned and defense refusals selected by the keyword prefix rules — the "
    "rules that score the table (circular: read the LLM judge's column, if any).",
}
"""What the table says about how the aligned data were selected (`safety.select_judge`)."""


def _rows(
    ctx: StageContext, cfg: PipelineConfig, seed: int
) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """One seed's finished rows: (name, its evaluation, its training summary)."""
    out = []
    end = f".evaluate.s{seed}"
    for key in ctx.stage_folders:
        if not key.endswith(end):
            continue
        row = key[: -len(end)]
        ev = ctx.summary_of(f"{row}.evaluate", seed)
        tr = ctx.summary_of(f"{row}.train", seed) if ctx.has(f"{row}.train", seed) else None
        out.append((row, ev, tr))
    return out


def comparisons(ctx: StageContext, cfg: PipelineConfig) -> list[Comparison]:
    """The study's claims as paired rows pooled over seeds, on the first eval set's keyword
    safety verdicts (and the LLM judge's, when one is configured; its unjudged items unpaired): the attack against no attack, each robust reducer and each defense against
    the undefended attack, each malicious share against no attack (and its defense against
    it); then every row's held-out loss against the base model."""
    p: SafetyPipelineConfig = cfg.params
    suite = p.eval_sets[0]
    pct = [f"attack-{round(s * 100)}" for s in p.shares()[1:]]
    pairs = [("no-attack", "base"), ("attack", "no-attack")]
    pairs += [(f"attack+{r}", "attack") for r in p.reducers]
    pairs += [(f"defense-L{k}", "attack") for k in p.defense_levels]
    if p.defense_on_best and p.reducers:
        pairs.append((f"best+L{p.defense_on_best}", "attack"))
    pairs += [(a, "no-attack") for a in pct]
    if p.sweep_defense:
        pairs += [(f"{a}+L{p.sweep_defense}", a) for a in pct]
    wanted = [
        ((f"{arm}.evaluate", f"{suite}.{judge}"), (f"{ref}.evaluate", f"{suite}.{judge}"), arm,
         ref, f"{suite} safety rate ({label})")
        for judge, label in (("rules", "rules"), ("llm", "LLM judge"))
        for arm, ref in pairs
    ]  # fmt: skip
    wanted += [
        ((f"{n}.evaluate", "heldout.tuned"), (f"{n}.evaluate", "heldout.base"), n, "base",
         "held-out loss")
        for n in dict.fromkeys(a for a, _ in pairs)
    ]  # fmt: skip
    rows = []
    for arm_ref, ref_ref, arm, ref, metric in wanted:
        c = compare_items(ctx, cfg.seeds, arm_ref, ref_ref, arm, ref, metric=metric)
        if c is not None:
            rows.append(c)
    return rows


def _rate(ev: dict[str, Any], suite: str, judge: str) -> str:
    r = ev["safety"].get(suite, {}).get(judge)
    if r is None:
        return "—"
    if r["rate"] is None:
        return "— (none judged)"
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def table_markdown(
    rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]], suites: list[str]
) -> str:
    judges = ["rules", "rules-prefix"]
    extra = ["llm"] if any("llm" in s for _, ev, _ in rows for s in ev["safety"].values()) else []
    head = ["row"]
    for s in suites:
        head += [
            f"{s} safety ({'LLM judge' if j == 'llm' else j})"
            for j in [*judges, *extra]
            if j != "rules-prefix" or s == suites[0]
        ]
    head += ["Δ held-out loss vs base [95% CI]", "malicious share of aggregate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, ev, tr in rows:
        cells = [name]
        for s in suites:
            cells += [
                _rate(ev, s, j) for j in [*judges, *extra] if j != "rules-prefix" or s == suites[0]
            ]
        h = ev["heldout_loss"]
        cells.append(
            "0 (base)"
            if name == "base"
            else f"{h['diff']:+.3f} [{h['ci95'][0]:+.3f}, {h['ci95'][1]:+.3f}]"
        )
        share = (tr or {}).get("malicious_share")
        cells.append("—" if share is None else f"{share:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stealth_plot(run_dir: Path, path: Path) -> bool:
    """Per round, each sampled client's update norm and cosine to the mean update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, m = run_dir / "summary.json", run_dir / "metrics.jsonl"
    if not s.exists() or not m.exists():
        return False
    mal = {str(c) for c in json.loads(s.read_text()).get("malicious_clients") or []}
    rows = [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in [
        (axes[0], "update_norm", "update L2 norm"),
        (axes[1], "cos_to_mean", "cosine to the mean update"),
    ]:
        for kind, colour in [("benign", "tab:blue"), ("malicious", "tab:red")]:
            xs, ys = [], []
            for r in rows:
                for c, v in ((r.get("aggregation") or {}).get(key) or {}).items():
                    if (c in mal) == (kind == "malicious"):
                        xs.append(r["round"])
                        ys.append(v)
            ax.scatter(xs, ys, s=22, alpha=0.75, color=colour, label=kind)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Malicious updates look like benign ones (FedAvg under attack)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def sweep_plot(
    points: list[tuple[float, float | None, float | None]], level: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(points)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    a = [(100 * x, v) for x, v, _ in pts if v is not None]
    ax.plot([x for x, _ in a], [v for _, v in a], "o-", label="FedAvg, attacked")
    d = [(100 * x, b) for x, _, b in pts if b is not None]
    if d:
        ax.plot([x for x, _ in d], [b for _, b in d], "s-", label=f"+ defense L{level}")
    ax.set_xlabel("malicious clients (%)")
    ax.set_ylabel("safety rate (rules)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
    """The pooled comparisons (the kit's report, with the plots of the first seed) and, per
    seed, the wide table of every judge and row."""
    p: SafetyPipelineConfig = cfg.params
    per_seed = {s: _rows(ctx, cfg, s) for s in cfg.seeds}
    seed = next((s for s, r in per_seed.items() if r), cfg.seeds[0])
    rows = per_seed[seed]
    wide = "".join(
        f"\n## Seed {s}: every row and judge\n\n{table_markdown(r, p.eval_sets)}"
        for s, r in per_seed.items()
        if r
    )
    by = {name: ev for name, ev, _ in rows}
    first = p.eval_sets[0]

    def rate(name: str) -> float | None:
        ev = by.get(name)
        return ev["safety"][first]["rules"]["rate"] if ev else None

    points = [
        (
            p.malicious,
            rate("attack"),
            rate(f"defense-L{p.sweep_defense}") if p.sweep_defense else None,
        )
    ]
    for share in p.shares()[1:]:
        pct = f"{round(share * 100)}"
        points.append(
            (
                share,
                rate(f"attack-{pct}"),
                rate(f"attack-{pct}+L{p.sweep_defense}") if p.sweep_defense else None,
            )
        )
    if all(a is not None for _, a, _ in points):
        sweep_plot(points, p.sweep_defense, ctx.folder / "sweep.png")
    stealth = ctx.has("attack.train", seed) and stealth_plot(
        ctx.folder_of("attack.train", seed) / "run", ctx.folder / "stealth.png"
    )
    table = ResultTable(
        "Safety: a malicious-client attack on federated instruction tuning, and defenses",
        comparisons(ctx, cfg),
        intro=f"Seeds {cfg.seeds}; {p.num_clients} clients, {p.malicious:.0%} malicious. "
        "Safety rate = share of harmful requests refused (keyword rules), paired per request "
        f"and pooled over seeds; plots from seed {seed}."
        + (
            f" LLM-judged rows: {validity_note(p.judge.label(), 'safety')}."
            if p.judge is not None
            else ""
        )
        + SELECTION_NOTE[p.selector()],
        plots=[ctx.folder / "stealth.png", ctx.folder / "sweep.png"],
        costs=stage_costs(
            ctx, [k for k in ctx.stage_folders if ".train." in k or ".evaluate." in k]
        ),
        extra_md=wide,
    )
    summary = write_stage_report(ctx, table)
    per = {str(s): {n: ev for n, ev, _ in r} for s, r in per_seed.items()}
    (ctx.folder / "table.json").write_text(json.dumps(per, indent=1))
    return summary | {
        "arms": {str(s): [n for n, _, _ in r] for s, r in per_seed.items()},
        "stealth_plot": bool(stealth),
        "sweep": points,
    }
