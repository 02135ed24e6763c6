"""LoRA via PEFT: attach adapters and move *only* the adapter state in and out of the model."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel

from fedloom.settings import LoraSettings
from fedloom.utils import StateDict, seeded_torch


def attach_lora(model: PreTrainedModel, settings: LoraSettings, seed: int = 0) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter; base weights are frozen, only LoRA A/B train.

    LoRA A is initialised randomly (B = 0, so the adapter starts as the identity): the draw is
    made from a forked generator seeded by ``seed``, so the same seed gives the same adapter.
    """
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in settings.target_modules if m not in names]
    if missing:
        raise ValueError(
            f"`lora.target_modules` {missing} not found in the model; "
            f"linear layers here include e.g. {sorted(n for n in names if n.endswith('proj'))}"
        )
    cfg = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
        bias="none",
    )
    with seeded_torch(seed), warnings.catch_warnings():
        # PEFT calls a transformers property deprecated in v5; nothing for a user to act on
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        return get_peft_model(model, cfg)


def get_adapter_state(model: PeftModel) -> StateDict:
    """A detached fp32 copy of the adapter tensors (keys as PEFT saves them)."""
    return {
        k: v.detach().to("cpu", torch.float32).clone()
        for k, v in get_peft_model_state_dict(model).items()
    }


def set_adapter_state(model: PeftModel, state: StateDict) -> None:
    """Load adapter tensors into ``model``; every adapter key must be present with its shape."""
    current = get_peft_model_state_dict(model)
    if set(current) != set(state):
        extra, missing = sorted(set(state) - set(current)), sorted(set(current) - set(state))
        raise KeyError(f"adapter state mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in state.items():
        if current[k].shape != v.shape:
            raise ValueError(
                f"adapter tensor {k}: shape {tuple(v.shape)} != model's {tuple(current[k].shape)}"
            )
    set_peft_model_state_dict(model, state)


def load_adapter_folder(model: PeftModel, folder: str | Path) -> None:
    """Load a saved adapter (``save_pretrained`` folder, e.g. a run's ``adapter/``) into
    ``model``'s adapter: ``lora.init_from``. Its rank and target modules must match."""
    from safetensors.torch import load_file

    from fedloom.settings import ConfigError

    path = Path(folder) / "adapter_model.safetensors"
    saved = load_file(str(path))
    try:
        set_adapter_state(model, {k: v.to(torch.float32) for k, v in saved.items()})
    except (KeyError, ValueError) as e:
        raise ConfigError(
            f"`lora.init_from`: the adapter in {folder} does not fit this run's LoRA settings "
            f"(lora.r, lora.target_modules, model): {e}"
        ) from None
