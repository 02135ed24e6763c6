"""A data-quality grader for generated instruction/response pairs (U2S, FedGC, KnowledgeSG's
synthetic data): is the instruction clear and self-contained, is the response a correct,
complete answer to it, and (with a `context`, the passage the pair was written from) is it
grounded in that passage. Rated 1-10 in FastChat's format."""

from __future__ import annotations

from typing import ClassVar

from fedloom.judges.base import (
    Item,
    JudgeKind,
    Messages,
    parse_rating,
    register_judge,
    verdict_first,
)

SYSTEM = (
    "Please act as an impartial judge of training data for an AI assistant. You will see an "
    "instruction and the response written for it{context_note}. Rate the pair as a training "
    "example: the instruction must be clear and answerable on its own; the response must answer "
    "that instruction correctly, completely and helpfully{grounding}. A response that answers a "
    "different question, is cut off, is empty or repeats itself is a poor example. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing "
    "your explanation, you must rate the response on a scale of 1 to 10 by strictly following "
    'this format: "[[rating]]", for example: "Rating: [[5]]".'
)


@register_judge
class QualityJudge(JudgeKind):
    name = "quality"
    fields: ClassVar[tuple[str, ...]] = ("instruction", "response")
    higher = "better training pair (1-10)"

    def prompts(self, item: Item, reasoning: bool) -> list[Messages]:
        context = item.get("context")
        system = SYSTEM.format(
            context_note=", and the source passage it was written from" if context else "",
            grounding=", using only facts the passage supports" if context else "",
        )
        user = f"[Instruction]\n{item['instruction']}\n\n[Response]\n{item['response']}"
        if context:
            user = f"[Source passage]\n{context}\n\n{user}"
        if not reasoning:
            system = verdict_first(system)
        return [[{"role": "system", "content": system}, {"role": "user", "content": user}]]

    def parse(self, reply: str) -> float | None:
        return parse_rating(reply)
