"""Log-likelihood of continuations given contexts, batched, with a one-pass fast path.

When every continuation of a context is a single token (multiple choice answered by letter),
one forward pass over the context yields all their log-probabilities; otherwise each
(context + continuation) is scored in right-padded batches.
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
