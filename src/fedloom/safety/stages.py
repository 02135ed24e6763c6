"""The safety pipeline (``fedloom pipeline configs/safety.yaml``; docs/safety.md): every seed's
stages, then the pooled table."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

from fedloom.judges import JudgeModel
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.safety.answers import aligned_data_stage, attack_data_stage, defense_data_stage
from fedloom.safety.config import SafetyPipelineConfig
from fedloom.safety.data import (
    PROMPT_VERSION,
)
from fedloom.safety.evaluate import evaluate_row
from fedloom.safety.questions import data_stage, questions_stage
from fedloom.safety.train import _pct, train_row


@register_pipeline
class SafetyPipeline(PipelineMethod):
    name = "safety"
    config_cls = SafetyPipelineConfig

    def preflight(self, cfg: PipelineConfig) -> None:
        """The judge answers before any stage runs (a dead endpoint fails in seconds)."""
        if cfg.params.judge is not None:
            JudgeModel.shared(cfg.params.judge).preflight()

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: SafetyPipelineConfig = cfg.params
        st = [
            Stage("data", partial(data_stage, cfg=cfg), {"safety": asdict(p)}),
            Stage(
                "questions", partial(questions_stage, cfg=cfg), {"prompt_version": PROMPT_VERSION}
            ),
            Stage("attack-data", partial(attack_data_stage, cfg=cfg), {}),
            Stage("aligned-data", partial(aligned_data_stage, cfg=cfg), {}),
            Stage("base.evaluate", partial(evaluate_row, cfg=cfg, row=None), {}),
        ]

        def row(
            name: str, share: float | None, reducer: str = "mean", init: str | None = None
        ) -> None:
            settings = {"malicious": share, "reducer": reducer, "defense_from": init}
            st.append(
                Stage(
                    f"{name}.train",
                    partial(train_row, cfg=cfg, share=share, reducer=reducer, init=init),
                    settings,
                )
            )
            st.append(Stage(f"{name}.evaluate", partial(evaluate_row, cfg=cfg, row=name), {}))

        row("no-attack", None)
        row("attack", p.malicious)
        for r in p.reducers:
            row(f"attack+{r}", p.malicious, r)
        levels = sorted(
            {*p.defense_levels, *[k for k in (p.defense_on_best, p.sweep_defense) if k]}
        )
        for k in levels:
            st.append(
                Stage(
                    f"defense-L{k}.data",
                    partial(defense_data_stage, cfg=cfg, level=k),
                    {"level": k},
                )
            )
        for k in p.defense_levels:
            row(f"defense-L{k}", None, init=f"attack|L{k}")
        if p.defense_on_best and p.reducers:
            row(f"best+L{p.defense_on_best}", None, init=f"best|L{p.defense_on_best}")
        for share in p.shares()[1:]:
            row(f"attack-{_pct(share)}", share)
            if p.sweep_defense:
                row(
                    f"attack-{_pct(share)}+L{p.sweep_defense}",
                    None,
                    init=f"attack-{_pct(share)}|L{p.sweep_defense}",
                )
        return st

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.safety.report import write_report

        return write_report(ctx, cfg)
