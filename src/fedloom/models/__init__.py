"""Models: load a base LLM (bundled SmolLM2 GGUF, HF folder, GGUF path, tiny test Llama) + LoRA."""

from fedloom.models.loader import LoadedModel, ModelNotFoundError, load_model, resolve_runtime
from fedloom.models.lora import attach_lora, get_adapter_state, set_adapter_state

__all__ = [
    "LoadedModel",
    "ModelNotFoundError",
    "attach_lora",
    "get_adapter_state",
    "load_model",
    "resolve_runtime",
    "set_adapter_state",
]
