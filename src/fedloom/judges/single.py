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
    template: ClassVar[str] = "single-v1"
    """FastChat's prompt; turn 2 uses its `-multi-turn` form."""

    def prompts(self, item: Item, reasoning: bool) -> list[Messages]:
        """The one template filled with every field name FastChat's single-answer prompts use
        (each template takes the ones it names: `question` or `question_1`, `ref_answer_1`...)."""
        fields = {
            "question": item["question"],
            "answer": item["answer"],
            "question_1": item["question"],
            "answer_1": item["answer"],
            "ref_answer_1": item.get("reference", ""),
        }
        name = self.template
        if "question_2" in item:
            name += "-multi-turn"
            fields |= {
                "question_2": item["question_2"],
                "answer_2": item["answer_2"],
                "ref_answer_2": item.get("reference_2", ""),
            }
        return [fastchat(name, reasoning, **fields)]

    def parse(self, reply: str) -> float | None:
        return parse_rating(reply)
