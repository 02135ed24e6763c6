"""Which generator a pipeline uses: :class:`GeneratorConfig` (validated, saved with the
pipeline) and :func:`build_generator`, which builds it through the backend registry
(:data:`BACKENDS`: `local`, `openai`, `onnx`; :func:`register_backend` adds one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedloom.errors import FedloomError
from fedloom.generation.base import TextGenerator
from fedloom.settings import ModelConfig, _require


class GeneratorError(FedloomError, ValueError):
    """A generator cannot be built as configured (e.g. its adapter folder is missing)."""


Builder = Callable[["GeneratorConfig", bool], TextGenerator]
BACKENDS: dict[str, Builder] = {}
"""Generator backends by name: a builder from (config, chat) to a :class:`TextGenerator`."""


def register_backend(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in BACKENDS:
            raise ValueError(f"generator backend {name!r} is already registered")
        BACKENDS[name] = fn
        return fn

    return deco


@dataclass
class GeneratorConfig:
    backend: str = "local"
    """`local` (a model fedloom loads, on this machine), `openai` (an OpenAI-compatible server:
    vLLM, llama.cpp server, Ollama, a hosted API) or `onnx` (the same local model converted
    once to ONNX Runtime GenAI: faster on CPU, no LoRA adapters; `pip install 'fedloom[onnx]'`)."""
    model: str = "smollm2-135m-instruct"
    """local: a registered model (`fedloom models`), HF folder or .gguf; openai: the served
    model's name."""
    adapter: str | None = None
    """local: a saved LoRA adapter folder (a run's `adapter/`) loaded on top of `model`, e.g. a
    fine-tuned writer; None: the model alone. (openai/onnx: serve the merged model instead.)"""
    name: str | None = None
    """How the generator is named in every row it writes (provenance); None: the model's name
    (with `+adapter` when one is loaded)."""
    weights: str = "auto"
    """local: `auto` (bf16 weights where the hardware has native bf16, else fp32), `bf16`, `fp32`."""
    device: str = "auto"
    onnx_precision: str = "int4"
    """onnx: weights of the converted model, `int4` (fastest; hurts the smallest models'
    answers), `int8` or `fp32`."""
    base_url: str | None = None
    """openai: e.g. http://localhost:8000/v1 (vLLM's `vllm serve MODEL`)."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: the environment variable holding the key (never put keys in configs)."""
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 3

    def __post_init__(self) -> None:
        checks = [
            (
                self.backend in BACKENDS,
                f"`generator.backend` is {self.backend!r}; use one of {sorted(BACKENDS)}",
            ),
            (bool(self.model), "`generator.model` is empty"),
            (
                self.onnx_precision in ("int4", "int8", "fp32"),
                f"`generator.onnx_precision` is {self.onnx_precision!r}; use int4, int8 or fp32",
            ),
            (self.weights in ("auto", "bf16", "fp32"), "`generator.weights`: auto, bf16 or fp32"),
            (
                self.backend != "openai" or bool(self.base_url),
                "`generator.backend: openai` needs `generator.base_url` (e.g. "
                "http://localhost:8000/v1)",
            ),
            (
                self.base_url is None or self.base_url.startswith(("http://", "https://")),
                f"`generator.base_url` is {self.base_url!r}: give the full URL with its scheme "
                "and API root, e.g. http://127.0.0.1:8000/v1",
            ),
            (
                self.adapter is None or self.backend == "local",
                f"`generator.adapter` loads a LoRA adapter on a local model; with `backend: "
                f"{self.backend}` serve the merged model instead (`fedloom export --merged`)",
            ),
            (self.concurrency >= 1, "`generator.concurrency` must be >= 1"),
            (self.timeout > 0, "`generator.timeout` must be > 0 seconds"),
            (self.retries >= 0, "`generator.retries` must be >= 0"),
        ]
        for ok, msg in checks:
            _require(ok, msg)

    def label(self) -> str:
        """The generator's name in provenance."""
        if self.name:
            return self.name
        return self.model + (f"+{Path(self.adapter).name}" if self.adapter else "")


def build_generator(cfg: GeneratorConfig, chat: bool = True) -> TextGenerator:
    """The generator ``cfg`` describes (a local one loads its model now). ``chat``: whether the
    prompts go through a chat template (base models need ``chat=False``)."""
    if cfg.backend not in BACKENDS:
        raise GeneratorError(
            f"generator backend {cfg.backend!r} is not registered; choose one of {sorted(BACKENDS)}"
        )
    return BACKENDS[cfg.backend](cfg, chat)


@register_backend("openai")
def _openai(cfg: GeneratorConfig, chat: bool) -> TextGenerator:
    import os

    from fedloom.generation.openai_backend import OpenAIGenerator

    return OpenAIGenerator(
        cfg.model,
        str(cfg.base_url),
        os.environ.get(cfg.api_key_env),
        cfg.concurrency,
        cfg.timeout,
        cfg.retries,
    )


@register_backend("onnx")
def _onnx(cfg: GeneratorConfig, chat: bool) -> TextGenerator:
    from fedloom.generation.onnx_backend import OnnxGenerator, build_onnx
    from fedloom.models.loader import hf_folder, load_tokenizer

    tok = load_tokenizer(cfg.model, need_chat=chat)
    folder = build_onnx(hf_folder(cfg.model), cfg.onnx_precision)
    return OnnxGenerator(folder, tok, name=cfg.name or f"{cfg.model} (onnx {cfg.onnx_precision})")


@register_backend("local")
def _local(cfg: GeneratorConfig, chat: bool) -> TextGenerator:
    import torch

    from fedloom.generation.local import LocalGenerator
    from fedloom.models import load_model, resolve_runtime, weights_dtype
    from fedloom.models.loader import load_tokenizer

    if cfg.adapter is not None and not (Path(cfg.adapter) / "adapter_config.json").is_file():
        raise GeneratorError(
            f"`generator.adapter` {cfg.adapter} holds no adapter_config.json: give a run's "
            "adapter folder (RUN/adapter)"
        )
    mcfg = ModelConfig(name=cfg.model, device=cfg.device)
    device, _ = resolve_runtime(mcfg)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(cfg.weights) or weights_dtype(
        device
    )
    tok = load_tokenizer(cfg.model, need_chat=chat)
    loaded = load_model(mcfg, tok, dtype=dtype)
    model: Any = loaded.model
    if cfg.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter)
    return LocalGenerator(model, loaded.tokenizer, loaded.device, name=cfg.label())
