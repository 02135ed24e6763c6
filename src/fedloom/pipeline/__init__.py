"""Pipelines that run in resumable stages (``fedloom pipeline CONFIG``): a registered method
(``u2s`` ...) turns its config into an ordered list of stages; each stage gets a folder with
its resolved config, its outputs and a done marker, and a rerun skips finished stages."""

from fedloom.pipeline.runner import (
    PIPELINES,
    PipelineConfig,
    PipelineError,
    PipelineMethod,
    Stage,
    StageContext,
    load_pipeline_config,
    register_pipeline,
    run_pipeline,
)

__all__ = [
    "PIPELINES",
    "PipelineConfig",
    "PipelineError",
    "PipelineMethod",
    "Stage",
    "StageContext",
    "load_pipeline_config",
    "register_pipeline",
    "run_pipeline",
]
