"""Guards that keep evaluation items out of training and generation inputs, and private text out
of prompts that must hold none. They raise :class:`LeakError` (never ``assert``: ``python -O``
strips asserts, and a leak must stop a run however Python is started)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from fedloom.errors import FedloomError


class LeakError(FedloomError, RuntimeError):
    """Evaluation items reached training or generation inputs, or private text reached a prompt
    that must hold none."""


def require_disjoint(a: Iterable[Hashable], b: Iterable[Hashable], what: str) -> None:
    """Raise :class:`LeakError` naming ``what`` when ``a`` and ``b`` share an element."""
    shared = set(a) & set(b)
    if shared:
        examples = sorted(map(str, shared))[:3]
        raise LeakError(f"{what}: {len(shared)} shared, e.g. {examples}")


def require_none(found: Iterable[object], what: str) -> None:
    """Raise :class:`LeakError` when ``found`` (the offending items) is not empty."""
    items = list(found)
    if items:
        raise LeakError(f"{what}: {len(items)} found, e.g. {[str(x)[:80] for x in items[:3]]}")
