"""Paired comparison of an arm with a reference on the same items, pooled over seeds.

Every result table in fedloom is built from :func:`compare`: for each seed, the per-item
difference ``arm - reference`` on the items both were scored on; the effect is the mean over
seeds of each seed's mean difference; its 95% interval comes from a two-level bootstrap
(resample seeds with replacement, then items with replacement within each drawn seed), so the
interval carries both the item noise and the seed-to-seed spread. The verdict is read off the
interval, never off the point estimate:

* ``better`` — the interval lies wholly on the good side of 0,
* ``worse`` — wholly on the bad side,
* ``unresolved`` — it contains 0 (or touches it).

With one seed this is the ordinary paired percentile bootstrap over items.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fedloom.errors import FedloomError

VERDICTS = ("better", "worse", "unresolved")


class CompareError(FedloomError, ValueError):
    """The two sides of a comparison share no item, or their values are not finite."""


ItemValues = Mapping[str, float] | Sequence[float]
"""Per-item values of one seed: keyed by item id, or a sequence (position = item)."""


@dataclass(frozen=True)
class SeedResult:
    arm: float
    reference: float
    diff: float
    n: int
    """Items paired in this seed."""


@dataclass(frozen=True)
class Comparison:
    """One row of a result table: an arm against its reference on the same items."""

    arm: str
    reference: str
    metric: str
    lower_is_better: bool
    arm_mean: float
    """Mean over seeds of the arm's mean on the paired items."""
    reference_mean: float
    diff: float
    """Mean over seeds of the mean paired difference (arm - reference)."""
    low: float
    high: float
    """The 95% two-level bootstrap interval of ``diff``."""
    verdict: str
    per_seed: dict[int, SeedResult]
    unpaired: int
    """Items scored on only one side (left out of the comparison, counted here)."""
    resamples: int

    @property
    def seeds(self) -> list[int]:
        return sorted(self.per_seed)

    @property
    def n_items(self) -> int:
        return sum(s.n for s in self.per_seed.values())

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["per_seed"] = {str(k): asdict(v) for k, v in self.per_seed.items()}
        d["n_items"] = self.n_items
        d["seeds"] = self.seeds
        return d

    def digits(self) -> int:
        """Decimals that show the interval's width to two significant digits (at least 3)."""
        width = self.high - self.low
        return 3 if width <= 0 else min(8, max(3, 1 - math.floor(math.log10(width))))

    def cell(self, digits: int | None = None) -> str:
        """``diff [low, high]`` for a table cell."""
        d = self.digits() if digits is None else digits
        return f"{self.diff:+.{d}f} [{self.low:+.{d}f}, {self.high:+.{d}f}]"


def verdict_of(low: float, high: float, lower_is_better: bool) -> str:
    """``better`` / ``worse`` / ``unresolved`` from a 95% interval of ``arm - reference``."""
    if high < 0:
        return "better" if lower_is_better else "worse"
    if low > 0:
        return "worse" if lower_is_better else "better"
    return "unresolved"


def _keyed(values: ItemValues) -> dict[str, float]:
    if isinstance(values, Mapping):
        return {str(k): float(v) for k, v in values.items()}
    return {str(i): float(v) for i, v in enumerate(values)}


def paired_diffs(
    arm: Mapping[int, ItemValues], reference: Mapping[int, ItemValues]
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], int]:
    """Per seed both sides have, the arm's and the reference's values on their common items
    (in the arm's item order); and how many items were on one side only."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    unpaired = 0
    for seed in sorted(set(arm) | set(reference)):
        a, r = _keyed(arm.get(seed, {})), _keyed(reference.get(seed, {}))
        common = [k for k in a if k in r]
        unpaired += len(a) + len(r) - 2 * len(common)
        if common:
            av = np.array([a[k] for k in common], dtype=np.float64)
            rv = np.array([r[k] for k in common], dtype=np.float64)
            if not (np.isfinite(av).all() and np.isfinite(rv).all()):
                raise CompareError(f"seed {seed}: a per-item value is NaN or infinite")
            out[seed] = (av, rv)
    return out, unpaired


def bootstrap_interval(
    diffs: Sequence[np.ndarray], resamples: int, seed: int
) -> tuple[float, float]:
    """95% percentile interval of the mean over seeds of per-seed mean differences, by the
    two-level bootstrap: seeds drawn with replacement, then items within each drawn seed."""
    rng = np.random.default_rng(seed)
    s = len(diffs)
    # [B, S]: each seed's mean over its items drawn with replacement
    item_means = np.stack(
        [d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1) for d in diffs],
        axis=1,
    )
    if s == 1:
        reps = item_means[:, 0]
    else:
        drawn = rng.integers(0, s, size=(resamples, s))  # [B, S] seed indices
        reps = np.take_along_axis(item_means, drawn, axis=1).mean(axis=1)  # [B]
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return float(lo), float(hi)


def compare(
    arm: Mapping[int, ItemValues],
    reference: Mapping[int, ItemValues],
    *,
    arm_name: str = "arm",
    reference_name: str = "reference",
    metric: str = "value",
    lower_is_better: bool = False,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare ``arm`` with ``reference``: ``{seed: per-item values}`` on each side, items
    paired by id (or position). Seeds present on one side only are left out; items present on
    one side only are counted in ``unpaired``."""
    paired, unpaired = paired_diffs(arm, reference)
    if not paired:
        raise CompareError(
            f"{arm_name} vs {reference_name} ({metric}): no seed has an item scored on both sides"
        )
    per_seed = {
        s: SeedResult(float(a.mean()), float(r.mean()), float((a - r).mean()), len(a))
        for s, (a, r) in paired.items()
    }
    diffs = [a - r for a, r in paired.values()]
    lo, hi = bootstrap_interval(diffs, resamples, seed)
    diff = float(np.mean([p.diff for p in per_seed.values()]))
    return Comparison(
        arm=arm_name,
        reference=reference_name,
        metric=metric,
        lower_is_better=lower_is_better,
        arm_mean=float(np.mean([p.arm for p in per_seed.values()])),
        reference_mean=float(np.mean([p.reference for p in per_seed.values()])),
        diff=diff,
        low=lo,
        high=hi,
        verdict=verdict_of(lo, hi, lower_is_better),
        per_seed=per_seed,
        unpaired=unpaired,
        resamples=resamples,
    )
