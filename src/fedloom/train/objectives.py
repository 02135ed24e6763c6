"""Training objectives: what a micro-batch looks like and what loss it gives. The round loop,
sampling, aggregation and checkpointing are shared; only these differ between tasks.

| task  | examples           | loss                                                             |
|-------|--------------------|------------------------------------------------------------------|
| sft   | TokenizedExample   | mean cross-entropy over response tokens (every assistant turn)   |
| dpo   | TokenizedPair      | DPO (Rafailov et al. 2023), sigmoid form, reference = base model with the adapter disabled |
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from peft import PeftModel

from fedloom.data.template import IGNORE_INDEX, collate, collate_packed, collate_pairs
from fedloom.train.packing import packed_attention
from fedloom.utils import autocast


class Objective(Protocol):
    name: str

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        """A training micro-batch (may be packed)."""
        ...

    def collate_rows(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        """One padded row per example (a pair's two sequences for DPO): what
        :meth:`per_example_loss` reads."""
        ...

    def attention(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        """The attention a training micro-batch needs, around its forward **and** backward (a
        gradient-checkpointed model recomputes each layer's forward inside the backward)."""
        ...

    def loss(
        self, model: PeftModel, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> torch.Tensor:
        """The micro-batch loss (a scalar with grad)."""
        ...

    def per_example_loss(
        self, model: PeftModel, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> torch.Tensor:
        """One loss per example (shape [examples]) such that example i's gradient comes from
        row i alone: what DP-SGD clips. A DPO pair is one example."""
        ...


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """[rows, T] bool: position t's logits are needed where token t+1 is a response token
    (its label is not ignored); the last position predicts nothing."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [rows, tokens], got {tuple(labels.shape)}")
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM under ``model`` (PEFT or not) takes ``logits_to_keep`` (every
    transformers decoder this project loads does; a custom one may not)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    cls: Any = type(base)
    return _forward_takes_logits_to_keep(cls)


@functools.cache
def _forward_takes_logits_to_keep(cls: Any) -> bool:
    # once per model class, not per micro-batch
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


class SFTObjective:
    name = "sft"

    def __init__(self, packed: bool = False) -> None:
        self.packed = packed
        """Training micro-batches are packed into one row (no padding, same loss and gradients);
        per-example losses (DP-SGD) read padded rows (:meth:`collate_rows`)."""

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_packed(examples) if self.packed else collate(examples, pad_id)

    def collate_rows(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)

    def attention(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        return packed_attention(model) if self.packed else contextlib.nullcontext()

    def loss(
        self, model: PeftModel, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> torch.Tensor:
        """Mean cross-entropy over the micro-batch's response tokens. The LM head (a 49k-way
        projection on SmolLM2) and the cross-entropy run only at the positions that predict a
        response token (:func:`predicting_positions`): prompt positions' logits never reach the
        loss, so skipping them changes nothing but the time."""
        if not accepts_logits_to_keep(model):
            with autocast(batch["input_ids"].device, dtype), self.attention(model):
                return model(**batch, use_cache=False).loss.float()
        logits, targets, _ = self.response_logits(model, batch, dtype)
        return F.cross_entropy(logits.float(), targets)

    def response_logits(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The logits at the positions that predict a response token ([K, vocab]), the K
        tokens they predict, and which positions those are ([rows, T] bool,
        :func:`predicting_positions`): training's loss and held-out scoring read these. The
        model must take ``logits_to_keep`` (:func:`accepts_logits_to_keep`)."""
        keep = predicting_positions(batch["labels"])
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with autocast(batch["input_ids"].device, dtype), self.attention(model):
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
        return logits, batch["labels"][:, 1:][keep[:, :-1]], keep

    def per_example_loss(
        self, model: PeftModel, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> torch.Tensor:
        """Each row's mean cross-entropy over its own response tokens (``batch`` from
        :meth:`collate_rows`)."""
        with autocast(batch["input_ids"].device, dtype):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        labels = batch["labels"][:, 1:]
        tok = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2),
            labels,
            ignore_index=IGNORE_INDEX,
            reduction="none",
        )
        mask = labels != IGNORE_INDEX
        return (tok * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def sequence_logps(
    model: PeftModel | torch.nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of the label tokens, and their count."""
    with autocast(batch["input_ids"].device, dtype):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    logp = torch.gather(
        F.log_softmax(logits, dim=-1), 2, labels.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    return (logp * mask).sum(-1), mask.sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss per pair, and the implicit rewards.

        r_c = β·(log π(y_c|x) − log π_ref(y_c|x)),  r_r likewise
        loss = −log σ(r_c − r_r)

    Log-probabilities are sums over response tokens (as TRL's ``DPOTrainer`` with
    ``loss_type="sigmoid"``, no label smoothing)."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


@dataclass
class PairScores:
    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_tokens: torch.Tensor


def score_pairs(
    model: PeftModel,
    batch: dict[str, torch.Tensor],
    dtype: torch.dtype | None,
    grad: bool,
    policy: bool = True,
) -> PairScores:
    """Policy and reference log-probs of a collated pair batch (chosen rows, then rejected).
    The reference is the same model with its adapter disabled: no second copy of the weights.
    ``policy=False`` scores the reference only (the policy is then the reference)."""
    b = batch["input_ids"].shape[0] // 2
    off = model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
    with torch.no_grad(), off:
        ref, n_tok = sequence_logps(model, batch, dtype)
    pol = ref
    if policy:
        with contextlib.nullcontext() if grad else torch.no_grad():
            pol, _ = sequence_logps(model, batch, dtype)
    return PairScores(pol[:b], pol[b:], ref[:b], ref[b:], n_tok[:b])


class DPOObjective:
    name = "dpo"

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def collate(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, pad_id)

    def collate_rows(self, examples: list[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, pad_id)

    def attention(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # padded pairs: the model's own attention

    def loss(
        self, model: PeftModel, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> torch.Tensor:
        s = score_pairs(model, batch, dtype, grad=True)
        losses, _, _ = dpo_loss(
            s.policy_chosen, s.policy_rejected, s.ref_chosen, s.ref_rejected, self.beta
        )
        return losses.mean()

    def per_example_loss(
        self, model: PeftModel, batch: dict[str, torch.Tensor], dtype: torch.dtype | None
    ) -> torch.Tensor:
        """Per pair. Chosen and rejected rows go through the model in two forward passes of
        equal size, so Opacus sums row i of each into pair i's gradient (one example)."""
        b = batch["input_ids"].shape[0] // 2
        halves = [{k: v[:b] for k, v in batch.items()}, {k: v[b:] for k, v in batch.items()}]
        off = model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
        with torch.no_grad(), off:
            ref = [sequence_logps(model, h, dtype)[0] for h in halves]
        pol = [sequence_logps(model, h, dtype)[0] for h in halves]
        losses, _, _ = dpo_loss(pol[0], pol[1], ref[0], ref[1], self.beta)
        return losses
