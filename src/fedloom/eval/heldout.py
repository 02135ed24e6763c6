"""Held-out loss (token-weighted mean over response tokens) per domain, and sample answers."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.data.federated import FederatedData
from fedloom.data.template import IGNORE_INDEX, TokenizedExample, collate
from fedloom.train.objectives import SFTObjective, accepts_logits_to_keep
from fedloom.utils import autocast


def response_nll(
    model: PreTrainedModel | PeftModel,
    examples: Sequence[TokenizedExample],
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """Per example: the summed negative log-likelihood of its response tokens and their count.
    Forward only, the way training runs: ``batch_size`` examples packed into one row (packed
    attention, no padding) and the LM head only at positions that predict a response token
    (what the score reads). Padded rows with logits everywhere put ~10x more floats through the
    49k-way head and its fp32 softmax (SmolLM2, 8 x 256 tokens: ~1 GB a batch); the sums are the
    same (tests/test_packing.py). A model whose forward takes no ``logits_to_keep`` is scored
    on padded rows."""
    model.eval()
    out: list[tuple[float, int]] = []
    packed = SFTObjective(packed=True)
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = list(examples[i : i + batch_size])
            if not accepts_logits_to_keep(model):
                out += padded_nll(model, chunk, pad_id, device, autocast_dtype)
                continue
            batch = {k: v.to(device) for k, v in packed.collate(chunk, pad_id).items()}
            logits, targets, keep = packed.response_logits(model, batch, autocast_dtype)
            nll = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="none"
            )
            # the example each kept position belongs to: a new one starts at position 0
            example = (batch["position_ids"][0] == 0).cumsum(0) - 1
            owner = example[keep[0]]
            sums = torch.zeros(len(chunk), dtype=torch.float64, device=device)
            sums.index_add_(0, owner, nll.double())
            counts = torch.bincount(owner, minlength=len(chunk))
            out += [(float(s), int(c)) for s, c in zip(sums, counts, strict=True)]
    return out


def padded_nll(
    model: PreTrainedModel | PeftModel,
    examples: list[TokenizedExample],
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> list[tuple[float, int]]:
    """:func:`response_nll` on padded rows with logits at every position: the fallback for a
    model without ``logits_to_keep``, and the reference the packed scoring is tested against."""
    batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
    with torch.no_grad(), autocast(device, autocast_dtype):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]  # predict t+1 from t
    nll = F.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    n = (labels != IGNORE_INDEX).sum(dim=1)
    return [(float(s), int(c)) for s, c in zip(nll.double().sum(dim=1), n, strict=True)]


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

    def __call__(self, base: bool = False) -> dict[str, float]:
        """Held-out loss of the current adapter, or of the base model when ``base``."""
        # a plain model (no adapter attached) is its own base model
        base = base and isinstance(self.model, PeftModel)
        ctx = self.model.disable_adapter() if base else contextlib.nullcontext()
        totals: dict[str, tuple[float, int]] = {}
        with ctx:
            for domain, examples in self.groups.items():
                scored = response_nll(
                    self.model,
                    examples,
                    self.pad_id,
                    self.device,
                    self.autocast_dtype,
                    self.batch_size,
                )
                totals[domain] = (sum(s for s, _ in scored), sum(n for _, n in scored))
        out = {d: s / max(n, 1) for d, (s, n) in totals.items()}
        all_sum, all_n = sum(s for s, _ in totals.values()), sum(n for _, n in totals.values())
        return {"all": all_sum / max(all_n, 1), **out}


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
    ctx = (
        model.disable_adapter()
        if base and isinstance(model, PeftModel)
        else contextlib.nullcontext()
    )
    with ctx:
        scored = response_nll(model, examples, pad_id, device, autocast_dtype, batch_size)
    return [s / max(n, 1) for s, n in scored]


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
