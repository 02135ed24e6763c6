"""FedGC axis 4 — training strategy: in what order a client's private and generated data are
trained on. A strategy returns *phases*: lists of (name, records) trained one after the other,
each phase a federated run continuing from the previous phase's adapter.

    mixed:            one phase, private + generated shuffled together
    generated-first:  generated, then private
    private-first:    private, then generated
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Phases = list[tuple[str, list[Any]]]
STRATEGIES: dict[str, Callable[[list[Any], list[Any]], Phases]] = {}


def register_strategy(
    name: str,
) -> Callable[[Callable[[list[Any], list[Any]], Phases]], Callable[[list[Any], list[Any]], Phases]]:
    def deco(
        fn: Callable[[list[Any], list[Any]], Phases],
    ) -> Callable[[list[Any], list[Any]], Phases]:
        if name in STRATEGIES:
            raise ValueError(f"training strategy {name!r} is already registered")
        STRATEGIES[name] = fn
        return fn

    return deco


@register_strategy("mixed")
def mixed(private: list[Any], generated: list[Any]) -> Phases:
    return [("mixed", [*private, *generated])]


@register_strategy("generated-first")
def generated_first(private: list[Any], generated: list[Any]) -> Phases:
    return [p for p in [("generated", generated), ("private", private)] if p[1]]


@register_strategy("private-first")
def private_first(private: list[Any], generated: list[Any]) -> Phases:
    return [p for p in [("private", private), ("generated", generated)] if p[1]]
