"""Residual-based reweighting (Fu et al. 2019, "Attack-Resistant Federated Learning with
Residual-based Reweighting", arXiv 1912.11464), the `Residual` baseline of the safety study
(REFERENCE §4c: "Residual (IRLS repeated median)").

Per coordinate, the n clients' values sorted by size are fitted against their rank by Siegel's
repeated-median line (robust to outliers); each value's standardised residual e (scaled by a
MAD-style τ = 1.4826·(1 + 5/(n−1))·median of the n−1 largest |residuals|) gives it an IRLS
weight with Huber's bound K = λ·√(2/n) and the leverage h = √(1 − H_ii) of its rank:

    w = 1                    if |e/h| <= K
    w = K·h/|e|              otherwise

A value whose weight is below ``thresh`` is replaced by the line's value at its rank. A client's
confidence is its weights times their standard deviation over the clients (per coordinate),
summed over coordinates; normalised by the largest and squared, the confidences weight the
average of the (restricted) updates. Unweighted by shard size, as the reference code. Where
every client's confidence is 0 (all clients agree everywhere: no weight deviates) the clients
count equally; the reference would divide by zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedloom.reducers.base import (
    Reducer,
    ReducerConfig,
    Reduction,
    check_matrix,
    register_reducer,
)


def _median_last(x: torch.Tensor) -> torch.Tensor:
    """Median over the last dimension (the mean of the middle two for an even count)."""
    s = x.sort(dim=-1).values
    m = s.shape[-1]
    return s[..., m // 2] if m % 2 else (s[..., m // 2 - 1] + s[..., m // 2]) / 2


def repeated_median_line(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Siegel's repeated-median fit of each row's sorted values against their rank 0..n-1:
    slope = med_i med_{j != i} (y_i − y_j)/(i − j); intercept = med(y) − slope·(n−1)/2.
    ``Y``: [c, n] -> slopes [c], intercepts [c]."""
    c, n = Y.shape
    ys = Y.sort(dim=1).values
    idx = torch.arange(n, dtype=Y.dtype)
    dy = ys[:, :, None] - ys[:, None, :]  # [c, i, j]
    dx = (idx[:, None] - idx[None, :]).expand(c, n, n)
    off = ~torch.eye(n, dtype=torch.bool).expand(c, n, n)
    slopes = (dy[off] / dx[off]).view(c, n, n - 1)
    slope = _median_last(_median_last(slopes))
    intercept = _median_last(ys) - slope * (n - 1) / 2
    return slope, intercept


def residual_reweight(
    Y: torch.Tensor, lam: float, thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate (rows of ``Y``, [c, n]) and client: the confidence (IRLS weight times the
    weights' standard deviation over the clients) and the value kept (the client's, or the
    line's at its rank where its weight is below ``thresh``)."""
    c, n = Y.shape
    slope, intercept = repeated_median_line(Y)
    rank = Y.argsort(dim=1).argsort(dim=1).to(Y.dtype)
    line = intercept[:, None] + slope[:, None] * rank
    resid = Y - line
    # leverage of rank r in a fit on ranks 0..n-1: H_ii = 1/n + (r − r̄)² / (n(n²−1)/12)
    lev = 1.0 / n + (rank - (n - 1) / 2) ** 2 / (n * (n * n - 1) / 12)
    h = torch.sqrt((1 - lev).clamp(min=0))
    mad = _median_last(resid.abs().sort(dim=1).values[:, 1:])
    tau = 1.4826 * (1 + 5 / (n - 1)) * mad + 1e-7
    e = resid / tau[:, None]
    k = lam * math.sqrt(2.0 / n)
    w = h / e * torch.clamp(e / h, -k, k)
    w = torch.where(torch.isnan(w), torch.ones_like(w), w)  # e = 0: inside the bound
    conf = w * w.std(dim=1, keepdim=True)
    kept = torch.where(w >= thresh, Y, line)
    return conf, kept


@dataclass
class ResidualConfig(ReducerConfig):
    lam: float = 2.0
    """λ of Huber's bound K = λ·√(2/n) (the reference's LAMBDA)."""
    thresh: float = 0.1
    """Weights below this replace the value by the line's."""
    chunk: int = 65536
    """Coordinates processed at once (memory: chunk·n² values)."""

    def __post_init__(self) -> None:
        if not self.lam > 0 or not 0 <= self.thresh <= 1 or self.chunk < 1:
            raise ValueError(
                f"reducer residual: lam must be > 0, thresh in [0, 1], chunk >= 1 (got lam "
                f"{self.lam}, thresh {self.thresh}, chunk {self.chunk})"
            )

    def min_clients(self) -> int:
        return 3


@register_reducer("residual")
class Residual(Reducer):
    config_cls = ResidualConfig
    cfg: ResidualConfig

    def reduce(
        self, X: torch.Tensor, weights: Sequence[float], client_ids: Sequence[int], rnd: int
    ) -> Reduction:
        check_matrix(X)
        cfg = self.cfg
        n, d = X.shape
        X64 = X.double()
        score = torch.zeros(n, dtype=torch.float64)
        kept = torch.empty_like(X64)
        replaced = 0
        for s in range(0, d, cfg.chunk):
            Y = X64[:, s : s + cfg.chunk].T  # [c, n]
            conf, k = residual_reweight(Y, cfg.lam, cfg.thresh)
            score += conf.sum(dim=0)
            kept[:, s : s + cfg.chunk] = k.T
            replaced += int((k != Y).sum())
        if score.max() > 0:
            w = (score / score.max()) ** 2
            w = w / w.sum()
        else:  # no weight deviates anywhere: every client counts the same
            w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        update = (w[:, None] * kept).sum(dim=0).to(X.dtype)
        info = {"values_replaced": replaced, "median_share": float(w.median())}
        return Reduction(update, [float(v) for v in w], info)
