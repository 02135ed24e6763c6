"""Row names, and reading the data stage's files and the generated examples back."""

from __future__ import annotations

from pathlib import Path

from fedloom.data.schema import InstructionRecord
from fedloom.synth.common import read_jsonl


def _records(path: Path) -> list[InstructionRecord]:
    """Classification records (label and label set in the metadata) from a data stage's file."""
    return [
        InstructionRecord(
            r["instruction"], r["response"], metadata={"label": r["label"], "labels": r["labels"]}
        )
        for r in read_jsonl(path)
    ]


def row_name(algo: str, variant: str, alpha: float) -> str:
    return f"{algo}-{variant}-a{alpha}"


def _question(instruction: str) -> str:
    """The question inside a topic-classification prompt (what the generator is shown)."""
    return instruction.split("Question:", 1)[-1].strip()


def parse_generated(text: str, min_words: int, max_words: int) -> str | None:
    """One generated example: the reply's first substantial line, list marks and a leading
    "Question:" stripped; None when too short or too long."""
    import re

    for line in text.strip().splitlines():
        q = (
            re.sub(r"^\s*(?:[-*•]|\d+[.)]|(?:exam\s+)?question\s*\d*\s*:)\s*", "", line, flags=re.I)
            .strip()
            .strip("\"'*")
        )
        if not q or q.endswith(":") or re.match(r"^(sure|certainly|here('s| is))\b", q, re.I):
            continue
        n = len(q.split())
        return q if min_words <= n <= max_words else None
    return None
