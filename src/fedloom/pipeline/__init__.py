"""Pipelines that run in resumable stages (``fedloom pipeline CONFIG``): a registered method
(``u2s`` ...) turns its config into an ordered list of stages; each stage gets a folder named
after it (``out/<name>/``, ``out/<name>.s<seed>/`` for a seeded stage) with its resolved config, its outputs and a done marker, and a rerun skips finished stages."""

from fedloom.pipeline.runner import (
    PIPELINES,
    PipelineConfig,
    PipelineError,
    PipelineMethod,
    Stage,
    StageContext,
    load_pipeline_config,
    migrate_numbered,
    register_pipeline,
    run_pipeline,
    run_stages,
    seeded,
    stage_key,
)

__all__ = [
    "PIPELINES",
    "PipelineConfig",
    "PipelineError",
    "PipelineMethod",
    "Stage",
    "StageContext",
    "load_pipeline_config",
    "migrate_numbered",
    "register_pipeline",
    "run_pipeline",
    "run_stages",
    "seeded",
    "stage_key",
]
