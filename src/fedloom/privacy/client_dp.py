"""Client DP-SGD: sample-level differential privacy for each client's local training (Abadi et
al. 2016), on Opacus' per-example gradients (``GradSampleModule``) and ``DPOptimizer``.

One DP step of a client holding n examples, expected batch B = batch_size·grad_accum, q = B/n:

    batch  = Poisson(q) sample of the client's examples      (or a fixed-size shuffled batch)
    g_i    = ∇ loss_i  for each example i (a DPO pair is one example), LoRA parameters only
    g      = (Σ_i g_i·min(1, C/‖g_i‖) + N(0, σ²C²·I)) / B
    g     += ∇ (algorithm's own term, e.g. FedProx's (μ/2)‖θ − x‖²)   (data-independent)
    θ      ← AdamW(θ, g);  then the algorithm's after-step hook (SCAFFOLD's correction)

Everything after the noise is post-processing, so every FL algorithm keeps the guarantee. Each
client keeps its own accountant history (σ, q, steps) in its state; ε at δ (default 1/n) is
reported every round. With a budget (``target_epsilon`` or ``max_epsilon``) a client refuses
a round that would exceed it and reports when it cannot afford another one.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from fedloom.errors import FedloomError
from fedloom.privacy.accounting import (
    add_steps,
    epsilon,
    history_from_tensor,
    history_to_tensor,
    noise_for_epsilon,
)
from fedloom.settings import ClientDPConfig
from fedloom.train.local import LocalTrainer, LocalTrainResult, TrainHook
from fedloom.utils import rng_for

STATE_KEY = "dp"
"""The client-state entry holding ``{"history": (k, 3) tensor}``."""


class PrivacyBudgetSpent(FedloomError, RuntimeError):
    """A client was asked to train a round its privacy budget cannot pay for."""


@dataclass
class DPPlan:
    """A client's DP-SGD parameters, fixed by its data size and the run's schedule."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    expected_batch: int


@dataclass
class ClientDP:
    cfg: ClientDPConfig
    rounds: int
    participation: float
    """Expected share of rounds a client takes part in (sample_clients / num_clients)."""
    seed: int
    _plans: dict[tuple[int, int, int], DPPlan] = field(default_factory=dict)

    def plan(self, n: int, expected_batch: int, steps: int) -> DPPlan:
        """σ, q and δ for a client with ``n`` examples taking ``steps`` steps a round."""
        key = (n, expected_batch, steps)
        if key not in self._plans:
            q = min(1.0, expected_batch / n)
            delta = self.cfg.delta if self.cfg.delta is not None else 1.0 / n
            sigma = self.cfg.noise_multiplier
            if sigma is None:
                assert self.cfg.target_epsilon is not None
                rounds = (
                    self.rounds
                    if self.cfg.calibrate_for == "all_rounds"
                    else max(1, math.ceil(self.rounds * self.participation))
                )
                sigma = noise_for_epsilon(
                    self.cfg.target_epsilon, delta, q, rounds * steps, self.cfg.accountant
                )
            self._plans[key] = DPPlan(sigma, q, delta, expected_batch)
        return self._plans[key]

    def spent(self, history: list[tuple[float, float, int]], plan: DPPlan) -> float:
        return epsilon(history, plan.delta, self.cfg.accountant)

    def train(
        self,
        trainer: LocalTrainer,
        examples: Sequence[Any],
        lr: float,
        hooks: Sequence[TrainHook],
        steps: int,
        state: dict[str, Any],
        round_idx: int,
        client_id: int,
    ) -> tuple[LocalTrainResult, dict[str, float], dict[str, Any]]:
        """One client round of DP-SGD over the client's whole shard ``examples``.

        Returns the training result, the round's privacy metrics and the new client state."""
        tc = trainer.cfg
        plan = self.plan(len(examples), tc.batch_size * tc.grad_accum, steps)
        history = history_from_tensor(state.get(STATE_KEY, {}).get("history"))
        after = add_steps(history, plan.noise_multiplier, plan.sample_rate, steps)
        budget = self.cfg.budget
        eps_after = self.spent(after, plan)
        if budget is not None and eps_after > budget + 1e-9:
            raise PrivacyBudgetSpent(
                f"client {client_id}: another round would spend ε = {eps_after:.3f} > budget "
                f"{budget} (spent so far {self.spent(history, plan):.3f}); it takes no further part"
            )
        gen = self._generator(round_idx, client_id)
        res = dp_train(trainer, examples, lr, hooks, steps, plan, self.cfg, gen)
        next_eps = self.spent(
            add_steps(after, plan.noise_multiplier, plan.sample_rate, steps), plan
        )
        metrics = {
            "epsilon": eps_after,
            "delta": plan.delta,
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "dp_exhausted": float(budget is not None and next_eps > budget + 1e-9),
        }
        new_state = {**state, STATE_KEY: {"history": history_to_tensor(after)}}
        return res, metrics, new_state

    def _generator(self, round_idx: int, client_id: int) -> torch.Generator:
        g = torch.Generator()
        if self.cfg.seeded_noise:
            g.manual_seed(rng_for(self.seed, "client-dp", round_idx, client_id).getrandbits(63))
        else:
            g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        return g


def batches(
    n: int, plan: DPPlan, steps: int, sampling: str, gen: torch.Generator
) -> Iterator[list[int]]:
    """Indices of each step's logical batch: Poisson (each example with probability q, the
    size varies and may be 0) or fixed-size batches from one shuffle, repeated if needed."""
    if sampling == "poisson":
        for _ in range(steps):
            yield torch.nonzero(torch.rand(n, generator=gen) < plan.sample_rate).flatten().tolist()
        return
    need = steps * plan.expected_batch
    order: list[int] = []
    while len(order) < need:
        order += torch.randperm(n, generator=gen).tolist()
    for s in range(steps):
        yield order[s * plan.expected_batch : (s + 1) * plan.expected_batch]


def private_gradient(
    trainer: LocalTrainer,
    opt: DPOptimizer,
    examples: Sequence[Any],
    params: list[torch.nn.Parameter],
    plan: DPPlan,
    gen: torch.Generator,
) -> tuple[list[float], int, int]:
    """Set ``p.grad`` of ``params`` to one DP-SGD gradient of ``examples`` (a logical batch,
    run in micro-batches of ``train.batch_size``): per-example clipped sum plus noise, divided
    by the expected batch size. Returns the examples' losses and token counts."""
    bs, tokens, input_tokens = trainer.cfg.batch_size, 0, 0
    losses: list[float] = []
    chunks = [examples[i : i + bs] for i in range(0, len(examples), bs)]
    if not chunks:  # an empty Poisson batch still takes a noisy step
        std = plan.noise_multiplier * opt.max_grad_norm
        for p in params:
            noise = torch.normal(0.0, std, p.shape, generator=gen).to(p.device, p.dtype)
            p.grad = noise / plan.expected_batch
        return losses, tokens, input_tokens
    for j, chunk in enumerate(chunks):
        batch = {
            k: v.to(trainer.device)
            for k, v in trainer.objective.collate_rows(list(chunk), trainer.pad_id).items()
        }
        per_example = trainer.objective.per_example_loss(
            trainer.model, batch, trainer.autocast_dtype
        )
        losses += per_example.detach().tolist()
        with warnings.catch_warnings():
            # Opacus' backward hooks fire on outputs when the frozen inputs need no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            per_example.sum().backward()
        tokens += int((batch["labels"][:, 1:] != -100).sum())
        input_tokens += int(batch["attention_mask"].sum())
        if j < len(chunks) - 1:  # clip and accumulate this micro-batch; noise once at the end
            opt.signal_skip_step(do_skip=True)
            opt.pre_step()
            opt.zero_grad(set_to_none=True)
    opt.pre_step()  # clip, add N(0, σ²C²), divide by the expected batch size
    return losses, tokens, input_tokens


def dp_train(
    trainer: LocalTrainer,
    examples: Sequence[Any],
    lr: float,
    hooks: Sequence[TrainHook],
    steps: int,
    plan: DPPlan,
    cfg: ClientDPConfig,
    gen: torch.Generator,
) -> LocalTrainResult:
    """``steps`` DP-SGD steps of ``trainer``'s model on the client's ``examples``."""
    t0 = time.perf_counter()
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = DPOptimizer(
        torch.optim.AdamW(params, lr=lr, weight_decay=trainer.cfg.weight_decay),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=cfg.max_grad_norm,
        expected_batch_size=plan.expected_batch,
        loss_reduction="mean",
        generator=gen,
    )
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=False)
    losses: list[float] = []
    tokens = input_tokens = drawn = 0
    model.train()
    try:
        for idx in batches(len(examples), plan, steps, cfg.sampling, gen):
            drawn += len(idx)
            batch_losses, t, it = private_gradient(
                trainer, opt, [examples[i] for i in idx], params, plan, gen
            )
            losses += batch_losses
            tokens, input_tokens = tokens + t, input_tokens + it
            extra = [e for h in hooks if (e := h.loss_term()) is not None]
            if extra:  # depends on θ and the broadcast only: added after the noise
                grads = torch.autograd.grad(sum(extra), params)  # type: ignore[arg-type]
                for p, g in zip(params, grads, strict=True):
                    assert p.grad is not None
                    p.grad += g
            opt.original_optimizer.step()
            opt.zero_grad(set_to_none=True)
            for h in hooks:
                h.after_step(lr)
    finally:
        gsm._close()  # remove the hooks: the shared model serves evaluation and other clients
        model.eval()
    return LocalTrainResult(
        steps=steps,
        examples=drawn,
        tokens=tokens,
        input_tokens=input_tokens,
        mean_loss=sum(losses) / len(losses) if losses else float("nan"),
        seconds=time.perf_counter() - t0,
    )
