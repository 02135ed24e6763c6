"""Models: load a base LLM (bundled SmolLM2 GGUF, HF folder, GGUF path, tiny test Llama) + LoRA."""

from fedloom.models.loader import LoadedModel, load_model, resolve_runtime, weights_dtype
from fedloom.models.lora import attach_lora, get_adapter_state, set_adapter_state
from fedloom.models.registry import MODELS, ModelNotFoundError, ModelSpec, register_model

__all__ = [
    "MODELS",
    "LoadedModel",
    "ModelSpec",
    "ModelNotFoundError",
    "attach_lora",
    "get_adapter_state",
    "load_model",
    "register_model",
    "resolve_runtime",
    "set_adapter_state",
    "weights_dtype",
]
