"""KnowledgeSG's prompts (the writer's, the professional's rating and answering) and their parsers."""

from __future__ import annotations

import re
from typing import Any

from fedloom.synth.common import (
    cut_words,
)

PROMPT_VERSION = "ksg-v1"
TASK = (
    "You write data for training a medical assistant: questions a patient, nurse or medical "
    "student might ask, each with a correct, concise answer from a doctor."
)
RATE_SYSTEM = (
    "You are a senior physician reviewing questions for a medical question-answering dataset."
)
RATE_PROMPT = (
    "Rate the question below from 1 to 10 for its quality (clear, self-contained, answerable) "
    "and its relevance to medicine. Reply with the rating only, in the form [[N]].\n\n"
    "Question: {q}"
)
ANSWER_SYSTEM = (
    "You are a medical doctor. Answer the question accurately and concisely, in a few sentences."
)
FAILURES = (
    "generation_error",
    "no_markers",
    "empty_field",
    "too_short",
    "copied_example",
    "duplicate",
    "near_duplicate",
    "unrated",
    "low_rating",
    "answer_error",
    "empty_answer",
)


# --- prompts and parsing ----------------------------------------------------------------------


def writer_prompt(
    examples: list[dict[str, Any]], show: str, words: int = 60, ask: str = "pair"
) -> str:
    """The server's prompt: the task statement, the examples (``show``: pairs or instructions
    only), and the output slot in the marked format (``ask``: a pair, or an instruction only).
    With no examples and ``ask="pair"`` it is the prompt the writer adapter was trained on."""
    parts = [TASK, ""]
    for i, ex in enumerate(examples, 1):
        parts += [f"### Example {i}", f"Instruction: {cut_words(ex['instruction'], words)}"]
        if show == "pair":
            parts.append(f"Response: {cut_words(ex['response'], words)}")
        parts.append("")
    parts.append("### Your turn")
    if ask == "pair":
        parts += ["Write one new pair in the same format:", "Instruction: <the question>"]
        parts.append("Response: <the answer>")
    else:
        parts += ["Write one new question in the same format:", "Instruction: <the question>"]
    return "\n".join(parts)


def writer_target(instruction: str, response: str) -> str:
    return f"Instruction: {instruction}\nResponse: {response}"


_INSTR_ONLY = re.compile(r"[#>*\s]*instruction\s*[*]*\s*:\s*[*]*", re.IGNORECASE)
_STOP = re.compile(r"\n\s*\n|\n\s*(?:#{2,}|response\s*:|instruction\s*:)", re.IGNORECASE)


def parse_instruction(text: str) -> str:
    """The instruction of a writer's output: after an ``Instruction:`` marker, up to a blank
    line, a response or the next marker; with no marker, the first line when it reads as a
    question or request (small instruct models often answer the slot with the bare question).
    Else the failure reason (``no_markers``, ``empty_field``)."""
    m = _INSTR_ONLY.search(text)
    if m is None:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        first = _LEAD.sub("", first).strip()
        if not first or first.startswith("#") or _NOT_A_QUESTION.match(first):
            return "no_markers"
        return first
    rest = text[m.end() :]
    stop = _STOP.search(rest)
    instr = (rest[: stop.start()] if stop else rest).strip().strip("*").strip()
    return instr if instr else "empty_field"


_LEAD = re.compile(r"^(?:\*\*)?(?:question|q|new question)\s*[:.]\s*(?:\*\*)?", re.IGNORECASE)
_NOT_A_QUESTION = re.compile(r"^(?:your |my |the answer|answer|response|example)", re.IGNORECASE)


def parse_rating_reply(text: str) -> float | None:
    """The 1-10 rating in the professional's reply: [[N]], else a lone number; None if none."""
    from fedloom.judges.base import parse_rating

    r = parse_rating(text)
    if r is None:
        nums = re.findall(r"\b(10|[1-9])(?:\.\d+)?\b", text)
        r = float(nums[0]) if len(nums) == 1 else None
    return r if r is not None and 1 <= r <= 10 else None
