"""LLM-as-judge, as the seed papers judged: MT-Bench single grading (`single`), pairwise
comparison in both orders (`pairwise`), reference-guided grading (`reference`), an MD-Judge-style
safety classifier (`safety`) and a data-quality grader for generated pairs (`quality`). A judge
is a registered kind (:data:`JUDGE_KINDS`) run on any generator (:class:`JudgeConfig`); every
judgement is a resumable generation job; an unparsed reply is unjudged, never 0.

model = JudgeModel(JudgeConfig())            # Qwen2.5-Coder-1.5B-Instruct on this machine
model.preflight()                            # before the stage's expensive work
judged = run_judge("single", model, [("q1", {"question": q, "answer": a})], "out/judge.jsonl")
print(judged.line())                         # parse rate, items/s: printed beside the score
"""

from fedloom.judges import pairwise, quality, reference, safety, single  # noqa: F401  (register)
from fedloom.judges.base import (
    JUDGE_KINDS,
    JudgeError,
    JudgeKind,
    get_judge_kind,
    parse_choice,
    parse_rating,
    register_judge,
    verdict_first,
)
from fedloom.judges.config import DEFAULT_JUDGE_MODEL, JudgeConfig
from fedloom.judges.run import Judged, JudgeModel, JudgeUnavailable, judge_prompts, run_judge

__all__ = [
    "DEFAULT_JUDGE_MODEL",
    "JUDGE_KINDS",
    "JudgeConfig",
    "JudgeError",
    "JudgeKind",
    "JudgeModel",
    "JudgeUnavailable",
    "Judged",
    "get_judge_kind",
    "judge_prompts",
    "parse_choice",
    "parse_rating",
    "register_judge",
    "run_judge",
    "verdict_first",
]
