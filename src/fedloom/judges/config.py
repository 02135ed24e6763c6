"""A judge's settings (the `judge:` section of a pipeline or an evaluation): which model judges,
through which backend, and how it is asked."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedloom.generation import GeneratorConfig
from fedloom.settings import _require

DEFAULT_JUDGE_MODEL = "qwen2.5-coder-1.5b-instruct"
"""The strongest generator that runs offline here (../shared/REFERENCE.md §1b); a real
deployment points `judge.generator` at a bigger model behind vLLM instead."""


def _default_generator() -> GeneratorConfig:
    return GeneratorConfig(model=DEFAULT_JUDGE_MODEL)


@dataclass
class JudgeConfig:
    """``judge: {generator: {model: qwen2.5-coder-1.5b-instruct}}`` (local, the default) or
    ``judge: {generator: {backend: openai, base_url: http://HOST:8000/v1, model: NAME}}``."""

    _shape_hint = (
        "write e.g. `judge: {generator: {model: qwen2.5-coder-1.5b-instruct}}` or `judge: "
        "{generator: {backend: openai, base_url: http://127.0.0.1:8000/v1, model: NAME}}`"
    )

    generator: GeneratorConfig = field(default_factory=_default_generator)
    """The judging model: any generator backend (local, openai, onnx). Always greedy."""
    reasoning: bool = False
    """False: verdict-first prompts (the verdict is all the judge writes: a few tokens, what a
    CPU can afford); True: the papers' prompts as written (FastChat: an explanation, then the
    verdict; hundreds of tokens per judgement: a GPU or hosted judge)."""
    max_new_tokens: int | None = None
    """None: 16 verdict-first, 512 with `reasoning`."""
    batch_size: int = 8
    preflight: bool = True
    """Send one short request before any work of the stage (an unreachable judge fails in
    seconds, not after every answer has been generated)."""

    def __post_init__(self) -> None:
        _require(
            self.max_new_tokens is None or self.max_new_tokens >= 1,
            "`judge.max_new_tokens` must be >= 1 (or null: 16, 512 with `reasoning`)",
        )
        _require(self.batch_size >= 1, "`judge.batch_size` must be >= 1")

    def new_tokens(self) -> int:
        return self.max_new_tokens or (512 if self.reasoning else 16)

    def label(self) -> str:
        """The judge's name in tables and rows."""
        return self.generator.label() + (" (reasoning)" if self.reasoning else "")
