"""Reference-guided grading (FastChat's `single-math-v1`, the papers' "Ref-GPT4" style): the
judge rates an answer 1-10 against a reference answer; with `question_2`/`answer_2`/
`reference_2`, the second turn (`single-math-v1-multi-turn`). The same filling as `single`,
FastChat's reference prompt."""

from __future__ import annotations

from typing import ClassVar

from fedloom.judges.base import register_judge
from fedloom.judges.single import SingleJudge


@register_judge
class ReferenceJudge(SingleJudge):
    name = "reference"
    fields: ClassVar[tuple[str, ...]] = ("question", "answer", "reference")
    higher = "closer to the reference (1-10)"
    template: ClassVar[str] = "single-math-v1"
