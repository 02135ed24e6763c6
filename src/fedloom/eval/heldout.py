"""Held-out loss (token-weighted mean over response tokens) per domain, and sample answers."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.data.federated import FederatedData
from fedloom.data.template import IGNORE_INDEX, TokenizedExample, collate
from fedloom.utils import autocast


class HeldoutEvaluator:
    """Evaluates the model as currently loaded on up to ``max_examples`` held-out examples per
    domain. Returns ``{"all": loss, "<domain>": loss, ...}`` (mean loss per response token)."""

    def __init__(
        self,
        model: PeftModel,
        data: FederatedData,
        pad_id: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        max_examples: int,
        batch_size: int,
    ) -> None:
        self.model, self.pad_id, self.device = model, pad_id, device
        self.autocast_dtype, self.batch_size = autocast_dtype, batch_size
        self.groups = {
            d: [data.heldout[i] for i in idx[:max_examples]]
            for d, idx in data.heldout_by_domain().items()
        }

    @torch.no_grad()
    def __call__(self, base: bool = False) -> dict[str, float]:
        """Held-out loss of the current adapter, or of the base model when ``base``."""
        self.model.eval()
        # a plain model (no adapter attached) is its own base model
        base = base and isinstance(self.model, PeftModel)
        ctx = self.model.disable_adapter() if base else contextlib.nullcontext()
        totals: dict[str, tuple[float, int]] = {}
        with ctx:
            for domain, examples in self.groups.items():
                loss_sum, n_tok = 0.0, 0
                for i in range(0, len(examples), self.batch_size):
                    batch = {
                        k: v.to(self.device)
                        for k, v in collate(examples[i : i + self.batch_size], self.pad_id).items()
                    }
                    with autocast(self.device, self.autocast_dtype):
                        logits = self.model(
                            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                        ).logits
                    # [B, T, V] -> predict token t+1 from t
                    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
                    loss = torch.nn.functional.cross_entropy(
                        logits.reshape(-1, logits.size(-1)),
                        labels.reshape(-1),
                        ignore_index=IGNORE_INDEX,
                        reduction="sum",
                    )
                    loss_sum += loss.item()
                    n_tok += int((labels != IGNORE_INDEX).sum())
                totals[domain] = (loss_sum, n_tok)
        out = {d: s / max(n, 1) for d, (s, n) in totals.items()}
        all_sum, all_n = sum(s for s, _ in totals.values()), sum(n for _, n in totals.values())
        return {"all": all_sum / max(all_n, 1), **out}


@torch.no_grad()
def example_losses(
    model: PreTrainedModel | PeftModel,
    examples: Sequence[TokenizedExample],
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    batch_size: int = 8,
    base: bool = False,
) -> list[float]:
    """Mean loss per response token of each example (for paired comparisons between two
    adapters on the same items). ``base`` disables the LoRA adapter."""
    model.eval()
    ctx = (
        model.disable_adapter()
        if base and isinstance(model, PeftModel)
        else contextlib.nullcontext()
    )
    out: list[float] = []
    with ctx:
        for i in range(0, len(examples), batch_size):
            batch = {
                k: v.to(device)
                for k, v in collate(list(examples[i : i + batch_size]), pad_id).items()
            }
            with autocast(device, autocast_dtype):
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]  # [B, T-1, V], [B, T-1]
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
            )  # [B, T-1]
            n = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
            out += (nll.sum(dim=1) / n).tolist()
    return out


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list[dict[str, str]]],
    device: torch.device,
    max_new_tokens: int,
    base: bool = False,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers to user prompts or to dialogues (lists of messages ending in a user turn),
    chat-templated, through :class:`~fedloom.generation.LocalGenerator` (batched by length,
    left padding, KV cache). ``base`` disables the LoRA adapter (PEFT models only)."""
    from fedloom.generation import GenerationConfig, LocalGenerator

    gen = LocalGenerator(model, tokenizer, device)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    ctx = (
        model.disable_adapter()
        if base and isinstance(model, PeftModel)
        else contextlib.nullcontext()
    )
    with ctx:
        return [gens[0].text for gens in gen.generate(list(prompts), cfg)]
