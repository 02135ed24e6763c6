"""Privacy accounting over Opacus' accountants.

A mechanism's history is a list of ``(noise_multiplier σ, sample_rate q, steps)`` entries, the
form Opacus' accountants keep; it is stored with the client (DP-SGD) or the server (central DP)
so that ε survives checkpoints and travels as a tensor in Flower's records.

    ε(history, δ) = accountant(history).get_epsilon(δ)
    σ(ε, δ, q, steps) = the smallest σ (binary search, Opacus) with ε(σ) ≤ target
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from fedloom.settings import ConfigError

History = list[tuple[float, float, int]]


def add_steps(history: History, sigma: float, q: float, steps: int) -> History:
    """``history`` with ``steps`` more steps of (σ, q), merged into the last entry when equal
    (as Opacus' ``RDPAccountant.step`` does)."""
    if steps <= 0:
        return list(history)
    out = list(history)
    if out and out[-1][0] == sigma and out[-1][1] == q:
        out[-1] = (sigma, q, out[-1][2] + steps)
    else:
        out.append((float(sigma), float(q), int(steps)))
    return out


def epsilon(history: Sequence[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """ε spent by ``history`` at ``delta`` (0 for no steps; inf for a step without noise)."""
    if not history:
        return 0.0
    if any(s == 0 for s, _, n in history if n > 0):
        return float("inf")
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PRV's "optimal order is the largest alpha" etc.
        return float(acc.get_epsilon(delta=delta))


def noise_for_epsilon(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """σ whose ε after ``steps`` steps at rate ``sample_rate`` is at most ``target_epsilon``
    (to Opacus' tolerance of 0.01 below it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                )
            )
    except ValueError as e:
        raise ConfigError(
            f"no noise multiplier reaches ε = {target_epsilon} at δ = {delta:.2e} over {steps} "
            f"steps at sampling rate {sample_rate:.4f} ({e}); raise target_epsilon or lower "
            "the number of steps"
        ) from None


def history_to_tensor(history: History) -> torch.Tensor:
    """(k, 3) float64: one row per history entry, for state dicts and Flower records."""
    return torch.tensor(history, dtype=torch.float64).reshape(-1, 3)


def history_from_tensor(t: torch.Tensor | None) -> History:
    if t is None:
        return []
    return [(float(s), float(q), int(n)) for s, q, n in t.tolist()]
