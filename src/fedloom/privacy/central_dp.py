"""Central DP: client-level differential privacy added by the server (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models"), written as a wrapper around any
strategy whose server step reads only the mean client update (as Flower's
``DifferentialPrivacyServerSideFixedClipping`` wraps a strategy).

Round t with sampled clients S, global adapter x, client adapters x_i:

    Δ_i  = x_i − x;   Δ̂_i = Δ_i · min(1, C/‖Δ_i‖)                 (‖·‖ over the whole adapter)
    Δ̄    = (1/|S|)·Σ_i Δ̂_i + N(0, (σ·C/|S|)²·I)                    (equal weights: sensitivity C/|S|)
    inner.aggregate(one update x + Δ̄)                                (FedAvg: x ← x + Δ̄; FedAdam:
                                                                     its optimizer step on Δ̄; ...)

Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping"): b̃ = (Σ_i 1[‖Δ_i‖ ≤ C] + N(0, σ_b²)) / |S|;  C ← C·exp(−η·(b̃ − γ)); the update noise
then uses σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2) so that both releases together cost what σ costs.

Accounting: one step per round at sampling rate q = |S|/N (the subsampled Gaussian, Opacus'
accountant; fixed-size sampling without replacement is accounted as Poisson, the usual
approximation). ε at δ (default 1/N) is reported every round.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from typing import Any

import torch

from fedloom.algorithms.aggregate import add_scaled, check_layout, subtract
from fedloom.algorithms.base import Broadcast, ClientUpdate, Strategy
from fedloom.privacy.accounting import (
    History,
    add_steps,
    epsilon,
    history_from_tensor,
    history_to_tensor,
    noise_for_epsilon,
)
from fedloom.settings import CentralDPConfig, ConfigError
from fedloom.train.local import TrainHook
from fedloom.utils import StateDict, rng_for


def update_norm(delta: StateDict) -> float:
    """L2 norm of an adapter update, over all its tensors."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in delta.values()))


def clip_update(delta: StateDict, clip_norm: float, norm: float | None = None) -> StateDict:
    """Δ·min(1, C/‖Δ‖) (``norm``: ‖Δ‖ when already known)."""
    scale = min(1.0, clip_norm / ((update_norm(delta) if norm is None else norm) + 1e-12))
    return {k: v * scale for k, v in delta.items()}


class CentralDP(Strategy):
    """Clip, average with equal weights, add Gaussian noise, then let ``inner`` aggregate."""

    def __init__(
        self,
        inner: Strategy,
        cfg: CentralDPConfig,
        rounds: int,
        sample_clients: int,
        seed: int,
    ) -> None:
        self.inner = inner
        self.cfg = inner.cfg
        self.num_clients = inner.num_clients
        self.dp = cfg
        self.seed = seed
        n, s = inner.num_clients, min(sample_clients, inner.num_clients)
        self.sample_rate = s / n
        self.delta = cfg.delta if cfg.delta is not None else 1.0 / n
        self.noise_multiplier = (
            cfg.noise_multiplier
            if cfg.noise_multiplier is not None
            else noise_for_epsilon(
                cfg.target_epsilon or 0.0, self.delta, self.sample_rate, rounds, cfg.accountant
            )
        )
        self.count_noise = cfg.count_noise if cfg.count_noise is not None else s / 20
        if cfg.adaptive and not 0 < self.noise_multiplier < 2 * self.count_noise:
            raise ConfigError(
                f"`privacy.central_dp`: adaptive clipping needs 0 < noise_multiplier < "
                f"2·count_noise = {2 * self.count_noise:g} (got {self.noise_multiplier:.3f}); "
                "raise count_noise or turn adaptive off"
            )
        self.clip_norm = cfg.clip_norm
        self.history: History = []
        self.last: dict[str, Any] = {}
        """This round's figures: ε, clip norm, update norms, share clipped (for metrics)."""

    name = property(lambda self: self.inner.name)
    pooled_data = False

    @property
    def update_noise(self) -> float:
        """σ_Δ: σ itself, or with adaptive clipping what is left after the count's noise."""
        if not self.dp.adaptive:
            return self.noise_multiplier
        return (self.noise_multiplier**-2 - (2 * self.count_noise) ** -2) ** -0.5

    def epsilon(self) -> float:
        return epsilon(self.history, self.delta, self.dp.accountant)

    # -- checkpointing: the wrapped strategy's state plus the wrapper's own ----------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "clip_norm": float(self.clip_norm),
            "history": history_to_tensor(self.history),
            "last": dict(self.last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from fedloom.errors import CheckpointError

        expected = {"inner", "clip_norm", "history", "last"}
        if set(state) != expected:
            raise CheckpointError(
                f"the checkpoint's central-DP state has {sorted(state)}, expected "
                f"{sorted(expected)}: it was written without `privacy.central_dp` or by another "
                "version"
            )
        self.inner.load_state_dict(state["inner"])
        self.clip_norm = float(state["clip_norm"])
        self.history = history_from_tensor(state["history"])
        self.last = dict(state["last"])

    # -- delegated ------------------------------------------------------------------------------
    def initialize(self, adapter: StateDict) -> None:
        self.inner.initialize(adapter)

    @property
    def global_adapter(self) -> StateDict:  # type: ignore[override]
        return self.inner.global_adapter

    def broadcast(self, client_id: int) -> Broadcast:
        return self.inner.broadcast(client_id)

    def sample(self, rng: random.Random, k: int, exclude: Collection[int] = ()) -> list[int]:
        return self.inner.sample(rng, k, exclude)

    def eval_targets(self) -> dict[str, StateDict]:
        return self.inner.eval_targets()

    def client_hooks(
        self, bc: Broadcast, client_state: dict[str, Any], params: dict[str, torch.nn.Parameter]
    ) -> list[TrainHook]:
        return self.inner.client_hooks(bc, client_state, params)

    def client_finish(
        self, bc: Broadcast, client_state: dict[str, Any], adapter: StateDict, steps: int, lr: float
    ) -> tuple[dict[str, StateDict], dict[str, Any]]:
        return self.inner.client_finish(bc, client_state, adapter, steps, lr)

    # -- the private aggregation ----------------------------------------------------------------
    def aggregate(self, round_idx: int, updates: Sequence[ClientUpdate]) -> None:
        x = self.inner.global_adapter
        deltas = [subtract(u.adapter, x) for u in updates]
        check_layout(deltas, x)
        norms = [update_norm(d) for d in deltas]
        c = self.clip_norm
        mean = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in x.items()}
        for d, norm in zip(deltas, norms, strict=True):
            for k, v in clip_update(d, c, norm).items():
                mean[k] += v.double() / len(deltas)
        gen = torch.Generator().manual_seed(
            rng_for(self.seed, "central-dp", round_idx).getrandbits(63)
        )
        std = self.update_noise * c / len(deltas)
        noisy = {
            k: (v + torch.normal(0.0, std, v.shape, generator=gen, dtype=torch.float64)).to(
                x[k].dtype
            )
            for k, v in mean.items()
        }
        self.inner.aggregate(round_idx, [ClientUpdate(-1, add_scaled(x, noisy, 1.0), 1, {}, {})])
        self.history = add_steps(self.history, self.noise_multiplier, self.sample_rate, 1)
        clipped = sum(n > c for n in norms)
        self.last = {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": c,
            "clipped": clipped / len(norms),
            "update_norm_mean": sum(norms) / len(norms),
        }
        if self.dp.adaptive:
            unclipped = len(norms) - clipped
            noisy_count = unclipped + float(
                torch.normal(0.0, self.count_noise, (1,), generator=gen, dtype=torch.float64)
            )
            share = noisy_count / len(norms)
            self.clip_norm = c * math.exp(-self.dp.clip_lr * (share - self.dp.target_quantile))
