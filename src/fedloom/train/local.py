"""The local trainer: a plain PyTorch loop (AdamW, grad accumulation, grad clipping, bf16 autocast).

    for step in range(local_steps):              # one optimizer step
        for micro in range(grad_accum):          # micro-batches of batch_size examples
            loss = objective(batch) + Σ hook.loss_term()    # SFT or DPO; FedProx adds (μ/2)‖θ − x‖²
            (loss / grad_accum).backward()
        clip, optimizer.step()
        hook.after_step(lr)                      # SCAFFOLD: θ ← θ − lr·(c − c_i)

A fresh AdamW is built for every client round (as OpenFedLLM's per-round trainer does), so no
optimizer state leaks between clients or rounds.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from peft import PeftModel

from fedloom.settings import TrainConfig
from fedloom.train.objectives import Objective, SFTObjective


class TrainHook(Protocol):
    """What an FL algorithm may add to local training."""

    def loss_term(self) -> torch.Tensor | None:
        """An extra term added to each micro-batch loss (None for nothing)."""
        ...

    def after_step(self, lr: float) -> None:
        """Called after every optimizer step, with the step's learning rate."""
        ...


@dataclass
class LocalTrainResult:
    steps: int
    examples: int
    tokens: int
    """Tokens that carried loss (response tokens)."""
    input_tokens: int
    mean_loss: float
    """Mean objective loss (LM loss or DPO loss) over the micro-batches (hook terms excluded)."""
    seconds: float


def cosine_lr(round_idx: int, rounds: int, lr: float, min_lr: float) -> float:
    """OpenFedLLM's schedule: cosine over rounds, constant within a round.

    1. lr_r = min_lr + ½(lr − min_lr)(1 + cos(π·r/R)), r = 0 … R−1
    2. round 0 uses the peak lr; the last round is still above min_lr.
    """
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * round_idx / rounds))


def draw_examples(shard: Sequence[int], n: int, rng: random.Random) -> list[int]:
    """``n`` indices from ``shard``: a fresh permutation, repeated when the shard is smaller."""
    out: list[int] = []
    while len(out) < n:
        perm = list(shard)
        rng.shuffle(perm)
        out.extend(perm[: n - len(out)])
    return out


def dynamic_steps(
    n_examples: int,
    rounds: int,
    sample_clients: int,
    num_clients: int,
    batch_size: int,
    grad_accum: int,
    epochs: float,
) -> int:
    """FedLLM-Bench's dynamic local steps: a client expects v = R·S/K visits (R rounds, S of K
    clients sampled per round), so ``ceil(|D_k|·E / v / (bs·GA))`` steps per visit give it ~E
    passes over its ``|D_k|`` examples. At least one step."""
    if min(n_examples, rounds, sample_clients, num_clients, batch_size, grad_accum) < 1:
        raise ValueError("dynamic_steps: every count must be >= 1")
    visits = rounds * min(sample_clients, num_clients) / num_clients
    return max(1, math.ceil(n_examples * epochs / visits / (batch_size * grad_accum)))


def example_tokens(example: Any) -> int:
    """Tokens one training example puts through the model (a DPO pair: prompt + longer reply)."""
    if hasattr(example, "input_ids"):
        return len(example.input_ids)
    return len(example.prompt_ids) + max(len(example.chosen_ids), len(example.rejected_ids))


def adapter_parameters(model: PeftModel) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters keyed like the adapter state dict (PEFT drops the adapter name)."""
    name = model.active_adapter
    return {n.replace(f".{name}.", "."): p for n, p in model.named_parameters() if p.requires_grad}


class LocalTrainer:
    def __init__(
        self,
        model: PeftModel,
        cfg: TrainConfig,
        pad_id: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        objective: Objective | None = None,
    ) -> None:
        self.objective = objective or SFTObjective()
        self.model = model
        self.cfg = cfg
        self.pad_id = pad_id
        self.device = device
        self.autocast_dtype = autocast_dtype

    @property
    def examples_per_round(self) -> int:
        return self.cfg.fixed_steps * self.cfg.grad_accum * self.cfg.batch_size

    def micro_batches(self, examples: list[Any]) -> Iterator[dict[str, torch.Tensor]]:
        bs, collate = self.cfg.batch_size, self.objective.collate
        for i in range(0, len(examples), bs):
            yield {
                k: v.to(self.device) for k, v in collate(examples[i : i + bs], self.pad_id).items()
            }

    def train(
        self,
        examples: list[Any],
        lr: float,
        hooks: Sequence[TrainHook] = (),
        steps: int | None = None,
        seed: int = 0,
    ) -> LocalTrainResult:
        """Run ``steps`` optimizer steps (default ``cfg.local_steps``) over ``examples`` in order.

        Dropout draws from torch's global generator; it is forked and seeded with ``seed`` for
        the duration, so a client round is reproducible and the caller's stream is untouched.
        """
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._train(
                examples, lr, hooks, self.cfg.fixed_steps if steps is None else steps
            )

    def warm_up(self, examples: Sequence[Any]) -> float:
        """Two optimizer steps, one on the longest of ``examples`` and one on a fixed random draw
        of them, then every trainable parameter back as it was, bit for bit (and torch's global
        RNG untouched): a fresh process grows its memory towards a training round's peak and
        runs each kernel once before its first real round. Returns the seconds it took.

        Measured on SmolLM2 (demo config): after one step on the longest examples the first
        round still faulted in 140-400k fresh pages (~1 s of kernel time, more in stalled
        threads); after these two, ~80k; a process reaches ~0 only after a few rounds (the heap
        settles as batch shapes vary)."""
        t0 = time.perf_counter()
        n = self.cfg.grad_accum * self.cfg.batch_size
        longest = sorted(examples, key=example_tokens, reverse=True)[:n]
        longest = (longest * n)[:n]  # a shard smaller than one step: repeat it
        mixed = random.Random(0).choices(list(examples), k=n)
        params = [p for p in self.model.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        self.train(longest + mixed, self.cfg.lr, steps=2)
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        return time.perf_counter() - t0

    def _train(
        self, examples: list[Any], lr: float, hooks: Sequence[TrainHook], steps: int
    ) -> LocalTrainResult:
        accum = self.cfg.grad_accum
        needed = steps * accum * self.cfg.batch_size
        if len(examples) < needed:
            raise ValueError(f"{steps} steps need {needed} examples, got {len(examples)}")
        t0 = time.perf_counter()
        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused AdamW: one kernel for all LoRA tensors (9.4 -> 1.4 ms a step on SmolLM2's 0.92M
        # LoRA parameters; benchmarks/train_throughput.py --packing)
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=self.cfg.weight_decay, fused=fused)
        self.model.train()
        batches = self.micro_batches(examples[:needed])
        losses: list[float] = []
        tokens = input_tokens = 0
        for _step in range(steps):
            for _micro in range(accum):
                batch = next(batches)
                with self.objective.attention(self.model):  # checkpointing recomputes in backward
                    loss = self.objective.loss(self.model, batch, self.autocast_dtype)
                    losses.append(loss.item())
                    for h in hooks:
                        extra = h.loss_term()
                        if extra is not None:
                            loss = loss + extra
                    (loss / accum).backward()
                tokens += int((batch["labels"][:, 1:] != -100).sum())
                mask = batch.get("attention_mask")
                input_tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            if self.cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            for h in hooks:
                h.after_step(lr)
        self.model.eval()
        return LocalTrainResult(
            steps=steps,
            examples=needed,
            tokens=tokens,
            input_tokens=input_tokens,
            mean_loss=sum(losses) / len(losses),
            seconds=time.perf_counter() - t0,
        )
