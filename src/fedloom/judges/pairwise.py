"""Pairwise comparison (FastChat's `pair-v2`; `pair-math-v1` when the item has a `reference`),
asked in both orders. An item's value is answer A's score: 1 (A better in both orders), 0 (B
better in both), 0.5 (a tie, or the two orders disagree: FastChat's rule, which makes position
bias a tie rather than a win). How often the orders disagree is the judge's position bias."""

from __future__ import annotations

from typing import ClassVar

from fedloom.judges.base import Item, JudgeKind, Messages, fastchat, parse_choice, register_judge

FIRST_WINS = {"A": 1.0, "B": 0.0, "C": 0.5}


@register_judge
class PairwiseJudge(JudgeKind):
    name = "pairwise"
    fields: ClassVar[tuple[str, ...]] = ("question", "answer_a", "answer_b")
    higher = "answer A preferred (share)"

    def prompts(self, item: Item, reasoning: bool) -> list[Messages]:
        a, b = item["answer_a"], item["answer_b"]
        ref = item.get("reference")
        name = "pair-math-v1" if ref else "pair-v2"
        extra = {"ref_answer_1": ref} if ref else {}
        return [
            fastchat(name, reasoning, question=item["question"], answer_a=x, answer_b=y, **extra)
            for x, y in ((a, b), (b, a))
        ]

    def parse(self, reply: str) -> float | None:
        """1: the answer shown first wins, 0: the second, 0.5: a tie."""
        choice = parse_choice(reply)
        return None if choice is None else FIRST_WINS[choice]

    def combine(self, parsed: list[float | None]) -> float | None:
        shown_first, shown_second = parsed  # A first, then B first
        if shown_first is None or shown_second is None:
            return None
        a_first, a_second = shown_first, 1.0 - shown_second
        return a_first if a_first == a_second else 0.5


def order_consistent(parsed: list[float | None]) -> bool | None:
    """Whether the two orders gave the same verdict (None: one is unparsed)."""
    first, second = parsed
    if first is None or second is None:
        return None
    return first == 1.0 - second
