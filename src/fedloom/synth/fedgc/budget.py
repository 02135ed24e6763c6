"""FedGC axis 1 — budget allocation: how many generated examples each client makes, out of a
total ``T`` (Ye et al. 2023, §3.2). Every rule rounds by largest remainder, so the budgets are
integers that sum to exactly ``T`` (ties go to the lower client id).

    equal:         b_i ∝ 1
    proportional:  b_i ∝ n_i            (clients with more data generate more)
    inverse:       b_i ∝ 1 / max(n_i, 1) (clients with less data generate more)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedloom.errors import FedloomError


class FedGCError(FedloomError, ValueError):
    """A FedGC setting cannot be met (a negative budget, an unknown candidate ...)."""


def largest_remainder(total: int, shares: Sequence[float]) -> list[int]:
    """Integers proportional to ``shares`` that sum to ``total`` (Hamilton's method)."""
    if total < 0:
        raise FedGCError(f"a budget must be >= 0, got {total}")
    if not shares or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise FedGCError(f"shares must be >= 0 with a positive sum, got {list(shares)}")
    z = sum(shares)
    exact = [total * s / z for s in shares]
    out = [int(e) for e in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


BUDGETS: dict[str, Callable[[int, Sequence[int]], list[int]]] = {}


def register_budget(
    name: str,
) -> Callable[
    [Callable[[int, Sequence[int]], list[int]]], Callable[[int, Sequence[int]], list[int]]
]:
    def deco(
        fn: Callable[[int, Sequence[int]], list[int]],
    ) -> Callable[[int, Sequence[int]], list[int]]:
        if name in BUDGETS:
            raise ValueError(f"budget rule {name!r} is already registered")
        BUDGETS[name] = fn
        return fn

    return deco


@register_budget("equal")
def equal(total: int, sizes: Sequence[int]) -> list[int]:
    return largest_remainder(total, [1.0] * len(sizes))


@register_budget("proportional")
def proportional(total: int, sizes: Sequence[int]) -> list[int]:
    return largest_remainder(total, [float(n) for n in sizes])


@register_budget("inverse")
def inverse(total: int, sizes: Sequence[int]) -> list[int]:
    return largest_remainder(total, [1.0 / max(n, 1) for n in sizes])


def allocate_labels(budget: int, counts: dict[str, int], rule: str) -> dict[str, int]:
    """Within one client: how many generated examples per label.

    uniform: ``budget`` split evenly over the labels (largest remainder);
    fill:    water-filling toward balance — labels the client has fewest of get examples
             first, until all reach the same level; what is left is split evenly.
    """
    labels = sorted(counts)
    if not labels:
        raise FedGCError("no labels to allocate over")
    if rule == "uniform":
        return dict(zip(labels, largest_remainder(budget, [1.0] * len(labels)), strict=True))
    if rule != "fill":
        raise FedGCError(f"label allocation {rule!r}: use uniform or fill")
    out = {lab: 0 for lab in labels}
    left = budget
    level = {lab: counts[lab] for lab in labels}
    while left > 0:
        low = min(level.values())
        lowest = [lab for lab in labels if level[lab] == low]
        higher = [v for v in level.values() if v > low]
        step = (min(higher) - low) if higher else None
        if step is None or step * len(lowest) > left:  # not enough to lift them all further
            extra = largest_remainder(left, [1.0] * len(lowest))
            for lab, e in zip(lowest, extra, strict=True):
                out[lab] += e
            break
        for lab in lowest:
            out[lab] += step
            level[lab] += step
        left -= step * len(lowest)
    return out
