"""The `fedgc` pipeline: FedGC's study grid at CPU scale, in resumable stages.

    fedloom pipeline configs/fedgc.yaml          (configs/tiny-fedgc.yaml: plumbing)

    data-a<α>         private pool split over clients by Dirichlet(α) on the label; a balanced
                      held-out set; member / non-member sets for membership inference
    gen-<key>         each client writes its budget of examples (budget rule, label allocation,
                      prompt design, guidance, amount): provenance on every record, rejects
                      counted by reason
    <row>.train       a federated run (task: classify) per (algorithm, variant, α); strategy
                      phases run in order, each continuing from the last adapter; then the
                      loss-threshold membership attack on its members vs non-members
    table             grid and ablation tables, plot

Task: MMLU questions → MMLU's four subject groups (`mmlu_topics`), accuracy by label
log-likelihood on a balanced held-out set (`task: classify`).

The stage list: per seed, the data per α, one generation per variant, one training per row; then
the pooled table."""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial
from typing import Any

from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.synth.fedgc.config import FedGCConfig, Variant
from fedloom.synth.fedgc.data import data_stage
from fedloom.synth.fedgc.generate import generate_stage
from fedloom.synth.fedgc.rows import row_name
from fedloom.synth.fedgc.train import train_stage


@register_pipeline
class FedGC(PipelineMethod):
    name = "fedgc"
    config_cls = FedGCConfig

    def row_names(self, cfg: PipelineConfig) -> list[str]:
        return [row_name(a, v.name, al) for a, v, al in self._rows(cfg)]

    def _rows(self, cfg: PipelineConfig) -> list[tuple[str, Variant, float]]:
        """(algorithm, variant, α) of every row: the grid, then the ablations."""
        p: FedGCConfig = cfg.params
        none = replace(p.default(), name="no-fedgc", total=0)
        rows: list[tuple[str, Variant, float]] = []
        for alpha in p.alphas:
            for algo in p.algorithms:
                rows += [(algo, none, alpha), (algo, p.default(), alpha)]
        rows += [(p.ablation_algorithm, v, p.ablation_alpha) for v in p.variants()]
        return rows

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: FedGCConfig = cfg.params
        rows = self._rows(cfg)
        st = [
            Stage(f"data-a{a}", partial(data_stage, cfg=cfg, alpha=a), {"alpha": a})
            for a in p.alphas
        ]
        keys: dict[str, Variant] = {}
        for _, v, alpha in rows:
            if v.total > 0:
                keys.setdefault(v.gen_key(alpha), v)
        for key, v in keys.items():
            alpha = float(key.split("-")[0][1:])
            st.append(
                Stage(f"gen-{key}", partial(generate_stage, cfg=cfg, v=v, alpha=alpha), asdict(v))
            )
        seen = set()
        for algo, v, alpha in rows:
            name = row_name(algo, v.name, alpha)
            if name in seen:
                continue
            seen.add(name)
            st.append(
                Stage(
                    f"{name}.train",
                    partial(train_stage, cfg=cfg, algo=algo, v=v, alpha=alpha),
                    asdict(v) | {"algorithm": algo, "alpha": alpha},
                )
            )
        return st

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.synth.fedgc.report import write_report

        return write_report(ctx, cfg, sorted(set(self.row_names(cfg))))
