"""One way to generate text: a :class:`GenerationConfig`, the :class:`TextGenerator` interface
and what a generation returns. Backends: :mod:`fedloom.generation.local` (any model fedloom
loads, optionally with a switchable LoRA adapter) and :mod:`fedloom.generation.openai_backend`
(any OpenAI-compatible server: vLLM, llama.cpp server, Ollama, a hosted API)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedloom.settings import _require

Prompt = str | list[dict[str, str]]
"""A user prompt (chat-templated) or raw text (``chat: false``), or a dialogue of messages
ending in a user turn."""


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0: greedy decoding; > 0: sampling at this temperature."""
    top_p: float = 1.0
    top_k: int = 0
    """0: no top-k cut."""
    repetition_penalty: float = 1.0
    n: int = 1
    """Samples per prompt (needs temperature > 0 when > 1)."""
    seed: int = 0
    """Seeds sampling: the same prompts, order, batch size and seed give the same samples."""
    stop: list[str] = field(default_factory=list)
    """A generation is cut before the first of these strings (finish_reason `stop`)."""
    chat: bool = True
    """True: prompts go through the model's chat template; False: raw continuation (base
    models without a template)."""
    batch_size: int = 8
    max_consecutive_failures: int = 16
    """A job stops (one line naming the generator and its last error) after this many prompts
    in a row failed: a dead endpoint is not waited on through every remaining prompt's retries.
    0: never stop."""

    def __post_init__(self) -> None:
        w = "generation"
        checks = [
            (self.max_new_tokens >= 1, f"`{w}.max_new_tokens` must be >= 1"),
            (self.temperature >= 0, f"`{w}.temperature` must be >= 0 (0: greedy)"),
            (0 < self.top_p <= 1, f"`{w}.top_p` must be in (0, 1]"),
            (self.top_k >= 0, f"`{w}.top_k` must be >= 0 (0: off)"),
            (self.repetition_penalty > 0, f"`{w}.repetition_penalty` must be > 0"),
            (self.n >= 1, f"`{w}.n` must be >= 1"),
            (
                self.n == 1 or self.temperature > 0,
                f"`{w}.n` is {self.n}: several samples per prompt need `temperature` > 0",
            ),
            (self.batch_size >= 1, f"`{w}.batch_size` must be >= 1"),
            (self.max_consecutive_failures >= 0, f"`{w}.max_consecutive_failures` must be >= 0"),
            (all(self.stop), f"`{w}.stop` holds an empty string"),
        ]
        for ok, msg in checks:
            _require(ok, msg)


@dataclass
class Generation:
    text: str
    tokens: int
    """New tokens generated (before a stop string cut)."""
    finish_reason: str
    """`stop` (a stop string or end of sequence), `length` (max_new_tokens reached) or `error`
    (the backend failed on this prompt: see ``error``)."""
    error: str | None = None
    prompt_tokens: int = 0
    """Tokens of the (templated) prompt: prefill work, often most of the cost."""


class TextGenerator(Protocol):
    name: str
    endpoint: str | None
    """Where generation runs, for provenance: the server URL of a remote backend; None for a
    model on this machine."""

    def generate(self, prompts: Sequence[Prompt], cfg: GenerationConfig) -> list[list[Generation]]:
        """``cfg.n`` generations per prompt, in the prompts' order."""
        ...


def sampling_of(cfg: GenerationConfig) -> dict[str, object]:
    """The settings that decide a sample (saved on every generated row: provenance)."""
    keys = ("temperature", "top_p", "top_k", "repetition_penalty", "n", "seed", "max_new_tokens")
    return {k: getattr(cfg, k) for k in keys} | {"chat": cfg.chat}


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
