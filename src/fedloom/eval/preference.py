"""Held-out preference evaluation (``task: dpo`` runs and ``fedloom eval --suite preference``).

On held-out pairs, with the adapter loaded (or disabled, for the base model):
- ``accuracy``: share of pairs where the policy gives the chosen response a higher
  log-likelihood than the rejected one (log π(y_c|x) > log π(y_r|x), sums over tokens);
- ``reward_accuracy``: share where DPO's implicit reward prefers the chosen one,
  β·(log π − log π_ref)(y_c) > (same)(y_r), the reference being the base model; a tie counts
  half, so the base model itself (all rewards zero) scores exactly 0.5 — chance;
- ``margin``: mean implicit reward margin r_c − r_r;
- ``chosen_logp``: mean per-token log-likelihood of the chosen responses;
- ``loss`` (also ``all``): mean DPO loss.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel

from fedloom.data.federated import FederatedData
from fedloom.data.template import collate_pairs
from fedloom.train.objectives import dpo_loss, score_pairs


class PreferenceEvaluator:
    def __init__(
        self,
        model: PeftModel,
        data: FederatedData,
        pad_id: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        max_examples: int,
        batch_size: int,
        beta: float,
    ) -> None:
        self.model, self.pad_id, self.device = model, pad_id, device
        self.autocast_dtype, self.batch_size, self.beta = autocast_dtype, batch_size, beta
        per_domain = data.heldout_by_domain()
        self.pairs = [data.heldout[i] for idx in per_domain.values() for i in idx[:max_examples]]

    @torch.no_grad()
    def __call__(self, base: bool = False) -> dict[str, float]:
        self.model.eval()
        # the base model is its own reference: one pass
        per = score_preference_pairs(
            self.model, self.pairs, self.pad_id, self.device, self.autocast_dtype, self.beta,
            self.batch_size, policy=not base,
        )  # fmt: skip
        n = max(len(self.pairs), 1)
        out = {k: sum(v) / n for k, v in per.items()}
        return {"all": out["loss"], **out}


@torch.no_grad()
def score_preference_pairs(
    model: PeftModel,
    pairs: list[Any],
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    beta: float,
    batch_size: int,
    policy: bool = True,
) -> dict[str, list[float]]:
    """Per tokenized pair: DPO ``loss`` (the base model as reference), ``accuracy`` (log π of
    the chosen > of the rejected), ``reward_accuracy`` (a tie counts half), ``margin`` and the
    chosen answer's per-token log-likelihood ``chosen_logp``. ``policy=False`` scores the base
    model (the adapter disabled: its own reference)."""
    out: dict[str, list[float]] = {
        k: [] for k in ("loss", "accuracy", "reward_accuracy", "margin", "chosen_logp")
    }
    for i in range(0, len(pairs), batch_size):
        batch = {
            k: v.to(device) for k, v in collate_pairs(pairs[i : i + batch_size], pad_id).items()
        }
        s = score_pairs(model, batch, autocast_dtype, grad=False, policy=policy)
        losses, rc, rr = dpo_loss(
            s.policy_chosen, s.policy_rejected, s.ref_chosen, s.ref_rejected, beta
        )
        out["loss"] += losses.tolist()
        out["accuracy"] += (s.policy_chosen > s.policy_rejected).float().tolist()
        out["reward_accuracy"] += ((rc > rr).float() + 0.5 * (rc == rr).float()).tolist()
        out["margin"] += (rc - rr).tolist()
        out["chosen_logp"] += (s.policy_chosen / s.chosen_tokens).tolist()
    return out
