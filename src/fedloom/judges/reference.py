"""Reference-guided grading (FastChat's `single-math-v1`, the papers' "Ref-GPT4" style): the
judge rates an answer 1-10 against a reference answer; with `question_2`/`answer_2`/
`reference_2`, the second turn (`single-math-v1-multi-turn`)."""

from __future__ import annotations

from typing import ClassVar

from fedloom.judges.base import Item, JudgeKind, Messages, fastchat, parse_rating, register_judge


@register_judge
class ReferenceJudge(JudgeKind):
    name = "reference"
    fields: ClassVar[tuple[str, ...]] = ("question", "answer", "reference")
    higher = "closer to the reference (1-10)"

    def prompts(self, item: Item, reasoning: bool) -> list[Messages]:
        if "question_2" in item:
            return [
                fastchat(
                    "single-math-v1-multi-turn",
                    reasoning,
                    question_1=item["question"],
                    answer_1=item["answer"],
                    ref_answer_1=item["reference"],
                    question_2=item["question_2"],
                    answer_2=item["answer_2"],
                    ref_answer_2=item.get("reference_2", ""),
                )  # fmt: skip
            ]
        return [
            fastchat(
                "single-math-v1",
                reasoning,
                question=item["question"],
                answer=item["answer"],
                ref_answer_1=item["reference"],
            )  # fmt: skip
        ]

    def parse(self, reply: str) -> float | None:
        return parse_rating(reply)
