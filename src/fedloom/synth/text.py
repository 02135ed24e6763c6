"""Views of records as text and as (text, instruction, response) triples, and sentence-boundary
chunking of raw text into pieces."""

from __future__ import annotations

import re
from collections.abc import Callable

from fedloom.data.schema import InstructionRecord, MultipleChoiceRecord, Record, TextRecord

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def as_text(record: Record) -> str | None:
    """The unstructured text a record offers a client: a document's text, a worked solution
    (an instruction record's response), a multiple-choice question's explanation; None when it
    has none (counted by the caller)."""
    if isinstance(record, TextRecord):
        return record.text.strip() or None
    if isinstance(record, MultipleChoiceRecord):
        return str(record.metadata.get("explanation") or "").strip() or None
    if isinstance(record, InstructionRecord):
        return record.response.strip() or None
    return None


def as_triple(record: Record) -> tuple[str, str, str] | None:
    """(text, instruction, response) for the example pool, or None:

    * multiple choice with an explanation: the explanation; the question; the right option
      followed by the explanation;
    * an instruction with an ``input`` (Alpaca): the input; the instruction; the response;
    * an instruction with a worked response (GSM8K, MATH): the worked solution; the problem;
      the solution."""
    if isinstance(record, MultipleChoiceRecord):
        exp = str(record.metadata.get("explanation") or "").strip()
        if not exp:
            return None
        return exp, record.question.strip(), f"{record.choices[record.answer]}. {exp}"
    if isinstance(record, InstructionRecord):
        if record.input.strip():
            return record.input.strip(), record.instruction.strip(), record.response.strip()
        if len(record.response.split()) >= 25:
            return record.response.strip(), record.instruction.strip(), record.response.strip()
    return None


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def chunk_text(text: str, count: Callable[[str], int], max_tokens: int) -> list[str]:
    """Pieces of at most ``max_tokens`` (by ``count``) made of whole sentences, in order; a
    single sentence longer than the limit becomes a piece of its own, cut at the last word that
    fits."""
    pieces: list[str] = []
    current: list[str] = []
    for sent in split_sentences(text):
        if count(sent) > max_tokens:
            if current:
                pieces.append(" ".join(current))
                current = []
            words = sent.split()
            while words:
                n = len(words)
                while n > 1 and count(" ".join(words[:n])) > max_tokens:
                    n = max(1, n * 3 // 4)
                pieces.append(" ".join(words[:n]))
                words = words[n:]
            continue
        if current and count(" ".join([*current, sent])) > max_tokens:
            pieces.append(" ".join(current))
            current = []
        current.append(sent)
    if current:
        pieces.append(" ".join(current))
    return pieces
