"""MT-Bench single-answer grading (FastChat's `single-v1`): the judge rates one answer 1-10;
with `question_2`/`answer_2`, the second turn is rated with the first in view
(`single-v1-multi-turn`)."""

from __future__ import annotations

from typing import ClassVar

from fedloom.judges.base import Item, JudgeKind, Messages, fastchat, parse_rating, register_judge


@register_judge
class SingleJudge(JudgeKind):
    name = "single"
    fields: ClassVar[tuple[str, ...]] = ("question", "answer")
    higher = "better answer (1-10)"

    def prompts(self, item: Item, reasoning: bool) -> list[Messages]:
        if "question_2" in item:
            return [
                fastchat(
                    "single-v1-multi-turn",
                    reasoning,
                    question_1=item["question"],
                    answer_1=item["answer"],
                    question_2=item["question_2"],
                    answer_2=item["answer_2"],
                )  # fmt: skip
            ]
        return [fastchat("single-v1", reasoning, question=item["question"], answer=item["answer"])]

    def parse(self, reply: str) -> float | None:
        return parse_rating(reply)
