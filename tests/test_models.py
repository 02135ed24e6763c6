from __future__ import annotations

import pytest

from fedloom.config import LoraSettings, ModelConfig
from fedloom.models import (
    ModelNotFoundError,
    attach_lora,
    get_adapter_state,
    load_model,
    set_adapter_state,
)


def test_unknown_model_names_the_options() -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        load_model(ModelConfig(name="/no/such/model"))


def test_lora_targets_checked_and_adapter_roundtrip() -> None:
    model = load_model(ModelConfig(precision="fp32")).model
    with pytest.raises(ValueError, match="not found in the model"):
        attach_lora(model, LoraSettings(target_modules=["c_attn"]))
    peft = attach_lora(model, LoraSettings(r=2, target_modules=["q_proj"]))
    state = get_adapter_state(peft)
    assert state and all("lora_" in k for k in state)
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert len(trainable) == len(state)
    changed = {k: v + 1 for k, v in state.items()}
    set_adapter_state(peft, changed)
    assert all((get_adapter_state(peft)[k] == changed[k]).all() for k in state)
    with pytest.raises(KeyError, match="adapter state mismatch"):
        set_adapter_state(peft, {"x": state[next(iter(state))]})
