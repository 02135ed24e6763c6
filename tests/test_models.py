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


@pytest.mark.parametrize(
    ("precision", "base"), [("bf16", "torch.bfloat16"), ("fp32", "torch.float32")]
)
def test_frozen_base_held_in_the_compute_dtype_lora_in_fp32(precision: str, base: str) -> None:
    """Training in bf16 holds the frozen base in bf16 (no per-step casts of every weight); the
    LoRA weights stay fp32 (PEFT's adapter dtype), whatever the base."""
    import os

    loaded = load_model(ModelConfig(name="tiny-llama", precision=precision))
    peft = attach_lora(loaded.model, LoraSettings(r=2))
    frozen = {str(p.dtype) for p in peft.parameters() if not p.requires_grad}
    trainable = {str(p.dtype) for p in peft.parameters() if p.requires_grad}
    assert frozen == {base} and trainable == {"torch.float32"}
    assert str(loaded.autocast_dtype) == ("torch.bfloat16" if precision == "bf16" else "None")
    # oneDNN's primitive cache is bounded for the process (unless the user set it)
    assert os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def test_process_memory_is_read() -> None:
    from fedloom.utils import rss_gib

    m = rss_gib()
    assert 0 < m["rss_gib"] <= m["peak_rss_gib"] < 1024
