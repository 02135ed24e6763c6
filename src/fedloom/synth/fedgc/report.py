"""FedGC tables (markdown + JSON) and the grid plot."""

from __future__ import annotations

import json
from typing import Any

from fedloom.pipeline.runner import PipelineConfig, StageContext
from fedloom.synth.fedgc.pipeline import row_name


def write_report(ctx: StageContext, cfg: PipelineConfig, rows: list[str]) -> dict[str, Any]:
    p = cfg.params
    res: dict[str, dict[str, Any]] = {}
    for name in rows:
        if ctx.has(f"{name}.train"):
            res[name] = ctx.summary_of(f"{name}.train")
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
    md = "\n".join(lines) + "\n"
    (ctx.folder / "table.md").write_text(md)
    (ctx.folder / "table.json").write_text(json.dumps(res, indent=1))
    _plot(res, p, ctx.folder / "grid.png")
    ctx.console.print(md)
    return {"rows": len(res), "table": str(ctx.folder / "table.md")}


def _plot(res: dict[str, dict[str, Any]], p: Any, path: Any) -> None:
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
