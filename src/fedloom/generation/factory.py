"""Which generator a pipeline uses: :class:`GeneratorConfig` (validated, saved with the
pipeline) and :func:`build_generator`."""

from __future__ import annotations

from dataclasses import dataclass

from fedloom.generation.base import TextGenerator
from fedloom.settings import ModelConfig, _require

BACKENDS = ("local", "openai", "onnx")


@dataclass
class GeneratorConfig:
    backend: str = "local"
    """`local` (a model fedloom loads, on this machine), `openai` (an OpenAI-compatible server:
    vLLM, llama.cpp server, Ollama, a hosted API) or `onnx` (the same local model converted
    once to ONNX Runtime GenAI: faster on CPU, no LoRA adapters; `pip install 'fedloom[onnx]'`)."""
    model: str = "smollm2-135m-instruct"
    """local: a registered model (`fedloom models`), HF folder or .gguf; openai: the served
    model's name."""
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
            (self.backend in BACKENDS, f"`generator.backend` is {self.backend!r}; use {BACKENDS}"),
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
            (self.concurrency >= 1, "`generator.concurrency` must be >= 1"),
            (self.timeout > 0, "`generator.timeout` must be > 0 seconds"),
            (self.retries >= 0, "`generator.retries` must be >= 0"),
        ]
        for ok, msg in checks:
            _require(ok, msg)


def build_generator(cfg: GeneratorConfig, chat: bool = True) -> TextGenerator:
    """The generator ``cfg`` describes (a local one loads its model now). ``chat``: whether the
    prompts go through a chat template (base models need ``chat=False``)."""
    import os

    if cfg.backend == "openai":
        from fedloom.generation.openai_backend import OpenAIGenerator

        return OpenAIGenerator(
            cfg.model,
            str(cfg.base_url),
            os.environ.get(cfg.api_key_env),
            cfg.concurrency,
            cfg.timeout,
            cfg.retries,
        )
    if cfg.backend == "onnx":
        from fedloom.generation.onnx_backend import OnnxGenerator, build_onnx
        from fedloom.models.loader import hf_folder, load_tokenizer

        tok = load_tokenizer(cfg.model, need_chat=chat)
        folder = build_onnx(hf_folder(cfg.model), cfg.onnx_precision)
        return OnnxGenerator(folder, tok, name=f"{cfg.model} (onnx {cfg.onnx_precision})")
    import torch

    from fedloom.generation.local import LocalGenerator
    from fedloom.models import load_model, resolve_runtime, weights_dtype
    from fedloom.models.loader import load_tokenizer

    mcfg = ModelConfig(name=cfg.model, device=cfg.device)
    device, _ = resolve_runtime(mcfg)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(cfg.weights) or weights_dtype(
        device
    )
    tok = load_tokenizer(cfg.model, need_chat=chat)
    loaded = load_model(mcfg, tok, dtype=dtype)
    return LocalGenerator(loaded.model, loaded.tokenizer, loaded.device, name=cfg.model)
