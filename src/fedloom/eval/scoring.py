"""Log-likelihood of continuations given contexts, batched, with a one-pass fast path.

When every continuation of a context is a single token (multiple choice answered by letter),
one forward pass over the context yields all their log-probabilities; otherwise the context is
run once and its KV cache reused for the continuations, batched and right-padded
(:func:`score_with_context_cache`; :func:`score_padded` scores each pair whole, the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.utils import autocast


@dataclass
class Scored:
    logprob: float
    """Sum of the continuation tokens' log-probabilities."""
    n_tokens: int
    n_chars: int


@torch.no_grad()
def score_continuations(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    context: str,
    continuations: Sequence[str],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 8,
) -> list[Scored]:
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    conts = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    if any(len(c) == 0 for c in conts):
        raise ValueError("an empty continuation cannot be scored")
    model.eval()
    if all(len(c) == 1 for c in conts):  # one pass: next-token distribution after the context
        with autocast(device, autocast_dtype):
            logits = model(input_ids=torch.tensor([ctx], device=device)).logits[0, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return [
            Scored(logp[c[0]].item(), 1, len(s)) for c, s in zip(conts, continuations, strict=True)
        ]
    if not ctx:
        return score_padded(
            model, tokenizer, ctx, conts, continuations, device, autocast_dtype, batch_size
        )
    return score_with_context_cache(
        model, tokenizer, ctx, conts, continuations, device, autocast_dtype, batch_size
    )


@torch.no_grad()
def score_with_context_cache(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    ctx: list[int],
    conts: Sequence[list[int]],
    continuations: Sequence[str],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    batch_size: int,
) -> list[Scored]:
    """The context goes through the model once; its KV cache is copied for each batch of
    continuations, which are right-padded after it (pads come after every real token, so no
    real token attends to one). A classification prompt of ~100 tokens with four one-to-three
    token labels costs one pass over the prompt instead of four."""
    import copy

    with autocast(device, autocast_dtype):
        first = model(input_ids=torch.tensor([ctx], device=device), use_cache=True)
    if getattr(first, "past_key_values", None) is None:  # a model that keeps no cache
        return score_padded(
            model, tokenizer, ctx, conts, continuations, device, autocast_dtype, batch_size
        )
    last = torch.log_softmax(first.logits[0, -1].float(), dim=-1)  # predicts each first token
    pad = int(tokenizer.pad_token_id)
    out: list[Scored] = []
    for i in range(0, len(conts), batch_size):
        chunk = conts[i : i + batch_size]
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), len(ctx) + width), dtype=torch.long)
        mask[:, : len(ctx)] = 1
        for j, c in enumerate(chunk):
            ids[j, : len(c)] = torch.tensor(c)
            mask[j, len(ctx) : len(ctx) + len(c)] = 1
        cache = copy.deepcopy(first.past_key_values)
        cache.batch_repeat_interleave(len(chunk))
        with autocast(device, autocast_dtype):
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                past_key_values=cache,
                use_cache=True,
            ).logits.float()
        logp = torch.log_softmax(logits, dim=-1)  # [B, W, V]: position t predicts token t + 1
        for j, c in enumerate(chunk):
            lp = last[c[0]].item()
            if len(c) > 1:
                pos = torch.arange(0, len(c) - 1, device=logp.device)
                lp += logp[j, pos, torch.tensor(c[1:], device=logp.device)].sum().item()
            out.append(Scored(lp, len(c), len(continuations[i + j])))
    return out


@torch.no_grad()
def score_padded(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    ctx: list[int],
    conts: Sequence[list[int]],
    continuations: Sequence[str],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    batch_size: int,
) -> list[Scored]:
    """Each (context + continuation) scored whole in right-padded batches: the reference the
    cached path is tested against."""
    out: list[Scored] = []
    pad = int(tokenizer.pad_token_id)
    for i in range(0, len(conts), batch_size):
        chunk = conts[i : i + batch_size]
        seqs = [ctx + c for c in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        with autocast(device, autocast_dtype):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)  # [B, T, V]
        for j, c in enumerate(chunk):
            # token at position t is predicted by logits at t-1
            pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(c), device=logp.device)
            lp = logp[j, pos, torch.tensor(c, device=logp.device)].sum().item()
            out.append(Scored(lp, len(c), len(continuations[i + j])))
    return out
