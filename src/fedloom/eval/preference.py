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

import torch
from peft import PeftModel

from fedloom.data.federated import FederatedData
from fedloom.train.objectives import DPOObjective, dpo_loss, score_pairs


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
        self.collate = DPOObjective(beta).collate

    @torch.no_grad()
    def __call__(self, base: bool = False) -> dict[str, float]:
        self.model.eval()
        sums = dict.fromkeys(("loss", "accuracy", "reward_accuracy", "margin", "chosen_logp"), 0.0)
        for i in range(0, len(self.pairs), self.batch_size):
            batch = {
                k: v.to(self.device)
                for k, v in self.collate(self.pairs[i : i + self.batch_size], self.pad_id).items()
            }
            # the base model is its own reference: one pass
            s = score_pairs(self.model, batch, self.autocast_dtype, grad=False, policy=not base)
            losses, rc, rr = dpo_loss(
                s.policy_chosen, s.policy_rejected, s.ref_chosen, s.ref_rejected, self.beta
            )
            sums["loss"] += losses.sum().item()
            sums["accuracy"] += (s.policy_chosen > s.policy_rejected).sum().item()
            sums["reward_accuracy"] += ((rc > rr).float() + 0.5 * (rc == rr).float()).sum().item()
            sums["margin"] += (rc - rr).sum().item()
            sums["chosen_logp"] += (s.policy_chosen / s.chosen_tokens).sum().item()
        n = max(len(self.pairs), 1)
        out = {k: v / n for k, v in sums.items()}
        return {"all": out["loss"], **out}
