"""What the safety stages share: the evaluation guard and the generators, from the one factory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fedloom.data.schema import PromptRecord
from fedloom.data.sources import load_source_report
from fedloom.generation import GenerationConfig, GeneratorConfig
from fedloom.safety.config import SafetyPipelineConfig
from fedloom.safety.data import (
    EvalGuard,
)


def eval_guard(p: SafetyPipelineConfig) -> EvalGuard:
    prompts = []
    for s in p.eval_sets:
        recs, _ = load_source_report(s)
        prompts += [r.prompt for r in recs if isinstance(r, PromptRecord)]
    return EvalGuard(prompts, p.guard_similarity)


def generator(gcfg: GeneratorConfig, adapter: Path | None = None) -> Any:
    """The configured generator, or that model with a trained adapter on it (L3: the
    attacked model writes its own defense data), from the one factory."""
    from fedloom.generation import build_generator

    if adapter is not None:
        gcfg = replace(gcfg, backend="local", adapter=str(adapter), base_url=None,
                       name=f"{gcfg.model}+{adapter.parent.parent.name}")  # fmt: skip
    return build_generator(gcfg)


def gen_config(
    p: SafetyPipelineConfig, tokens: int, seed: int, temperature: float | None = None
) -> GenerationConfig:
    t = p.temperature if temperature is None else temperature
    return GenerationConfig(
        max_new_tokens=tokens, temperature=t, batch_size=p.batch_size, seed=seed
    )
