"""Attention for packed micro-batches: one row holding several examples back to back, with
``position_ids`` restarting at 0 for each (:func:`fedloom.data.template.collate_packed`).

transformers can mask such a row itself (a block-diagonal causal mask built from the position
ids), but SDPA then runs its masked kernel over the whole row — quadratic in the row's length,
across examples — and measured slower than padding. This attention instead runs SDPA's causal
kernel on each example's slice of the row (no mask at all), the way FlashAttention's
variable-length kernel treats a packed batch: exact, and no FLOPs across example boundaries.
The linear layers see one unpadded row. Registered with transformers' ``AttentionInterface``
as ``fedloom_packed``; :func:`packed_attention` switches a model to it for one forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

NAME = "fedloom_packed"


def segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each example in a packed row: a new example starts where the position
    restarts at 0."""
    if position_ids.dim() != 2 or position_ids.shape[0] != 1:
        raise ValueError(
            f"packed attention takes one row of position ids, got {position_ids.shape}"
        )
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        raise ValueError("a packed row must start with position 0")
    ends = [*starts[1:], position_ids.shape[1]]
    return list(zip(starts, ends, strict=True))


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query [1, heads, T, d], key/value [1, kv_heads, T, d] -> [1, T, heads, d], each example
    attending causally to itself only."""
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        raise ValueError("packed attention needs the packed row's position_ids")
    groups = query.shape[1] // key.shape[1]
    dtype = query.dtype
    # SDPA's CPU flash kernel runs faster in fp32 than in bf16 (fwd+bwd of one 160-token
    # example: 3.2 vs 5.7 ms on an AVX512-BF16 CPU), and attention is a small share of the
    # FLOPs: compute it in fp32 on CPU, the linear layers around it stay bf16
    up = query.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
    sizes = [e - s for s, e in segments(position_ids)]
    qs, ks, vs = ((t.float() if up else t).split(sizes, dim=2) for t in (query, key, value))
    outs = [
        F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=groups > 1
        )
        for q, k, v in zip(qs, ks, vs, strict=True)
    ]
    return torch.cat(outs, dim=2).transpose(1, 2).to(dtype).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    # each slice runs SDPA's own causal kernel: no mask to build
    return None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention_forward)
    AttentionMaskInterface.register(NAME, _no_mask)


_register()


@contextlib.contextmanager
def packed_attention(model: Any) -> Iterator[None]:
    """Run ``model`` (a PEFT or transformers causal LM) with packed attention inside; its own
    attention implementation is back afterwards."""
    config = model.config
    saved = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = saved
