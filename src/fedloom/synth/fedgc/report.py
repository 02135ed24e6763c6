"""FedGC tables (markdown + JSON) and the grid plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedloom.experiment.collect import compare_items
from fedloom.experiment.compare import Comparison
from fedloom.experiment.report import ResultTable, stage_costs, write_stage_report
from fedloom.pipeline.runner import PipelineConfig, StageContext
from fedloom.synth.fedgc.rows import row_name


def comparisons(ctx: StageContext, cfg: PipelineConfig) -> list[Comparison]:
    """Held-out accuracy, paired per question and pooled over seeds: FedGC against no FedGC for
    every algorithm and α (the paper's claim), every ablation variant against the default
    FedGC, and no FedGC against the base model."""
    p = cfg.params
    pairs = []
    for alpha in p.alphas:
        for algo in p.algorithms:
            none, fedgc = row_name(algo, "no-fedgc", alpha), row_name(algo, "fedgc", alpha)
            pairs += [(fedgc, none), (none, None)]
    default = row_name(p.ablation_algorithm, "fedgc", p.ablation_alpha)
    for v in p.variants():
        pairs.append((row_name(p.ablation_algorithm, v.name, p.ablation_alpha), default))
    out = []
    for metric, file in (("held-out accuracy", "accuracy"), ("held-out loss", "heldout")):
        for arm, ref in pairs:
            ref_ref = (f"{ref or arm}.train", f"{file}.{'tuned' if ref else 'base'}")
            c = compare_items(
                ctx, cfg.seeds, (f"{arm}.train", f"{file}.tuned"), ref_ref, arm, ref or "base",
                metric=metric,
            )  # fmt: skip
            if c is not None:
                out.append(c)
    return out


def write_report(ctx: StageContext, cfg: PipelineConfig, rows: list[str]) -> dict[str, Any]:
    """The pooled comparisons (the kit's report) and, per seed, the grid and ablation tables."""
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for s in cfg.seeds:
        per_seed[s] = {n: ctx.summary_of(f"{n}.train", s) for n in rows if ctx.has(f"{n}.train", s)}
    seed = next((s for s, r in per_seed.items() if r), cfg.seeds[0])
    wide = "".join(
        f"\n## Seed {s}\n\n{seed_tables(cfg, res)}" for s, res in per_seed.items() if res
    )
    if per_seed[seed]:
        _plot(per_seed[seed], cfg.params, ctx.folder / "grid.png")
    keys = [k for k in ctx.stage_folders if k.startswith("gen-") or ".train." in k]
    table = ResultTable(
        "FedGC — generated data against label skew",
        comparisons(ctx, cfg),
        intro=f"Seeds {cfg.seeds}; each seed draws its own client split, generations and runs. "
        f"Rows are paired per held-out question and pooled over seeds; the plot is seed {seed}'s.",
        plots=[ctx.folder / "grid.png"],
        costs=stage_costs(ctx, keys),
        extra_md=wide,
    )
    summary = write_stage_report(ctx, table)
    (ctx.folder / "table.json").write_text(
        json.dumps({str(s): r for s, r in per_seed.items()}, indent=1)
    )
    return summary | {"arms": {str(s): len(r) for s, r in per_seed.items()}}


def seed_tables(cfg: PipelineConfig, res: dict[str, dict[str, Any]]) -> str:
    """One seed's grid (no FedGC → FedGC per algorithm and α, MIA) and ablation tables."""
    p = cfg.params
    lines = [
        "| algorithm | α | no FedGC | FedGC | Δ | MIA AUC (no → with) |",
        "|---|---|---|---|---|---|",
    ]
    for alpha in p.alphas:
        for algo in p.algorithms:
            a, b = (
                res.get(row_name(algo, "no-fedgc", alpha)),
                res.get(row_name(algo, "fedgc", alpha)),
            )
            if a and b:
                lines.append(
                    f"| {algo} | {alpha} | {a['accuracy']:.3f} | {b['accuracy']:.3f} | "
                    f"{b['accuracy'] - a['accuracy']:+.3f} | {a['mia']['auc']:.3f} → {b['mia']['auc']:.3f} |"
                )
    lines += [
        "",
        f"Ablations ({p.ablation_algorithm}, α = {p.ablation_alpha}; one axis changed from the default):",
        "",
    ]
    lines += ["| variant | accuracy | MIA AUC | generated kept |", "|---|---|---|---|"]
    for r in res.values():
        if r["algorithm"] == p.ablation_algorithm and r["alpha"] == p.ablation_alpha:
            lines.append(
                f"| {r['variant']} | {r['accuracy']:.3f} | {r['mia']['auc']:.3f} | "
                f"{r.get('generated_kept', 0)} |"
            )
    return "\n".join(lines) + "\n"


def _plot(res: dict[str, dict[str, Any]], p: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(p.alphas), figsize=(4.5 * len(p.alphas), 3.4), squeeze=False)
    for ax, alpha in zip(axes[0], p.alphas, strict=True):
        xs = list(range(len(p.algorithms)))
        for off, variant, colour in [(-0.18, "no-fedgc", "tab:gray"), (0.18, "fedgc", "tab:green")]:
            ys = [
                res.get(row_name(a, variant, alpha), {}).get("accuracy", 0.0) for a in p.algorithms
            ]
            ax.bar([x + off for x in xs], ys, width=0.36, color=colour, label=variant)
        ax.set_xticks(xs, p.algorithms)
        ax.set_title(f"Dirichlet α = {alpha}")
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
