"""Pieces the data-generation pipelines share: JSONL files, the marked instruction/response
format generations are read back from, text normalisation, lexical diversity."""

from __future__ import annotations

import re
from typing import Any

from fedloom.data.schema import InstructionRecord, Record
from fedloom.utils import read_jsonl, write_jsonl

__all__ = ["read_jsonl", "write_jsonl"]  # re-exported: the pipelines read them from here

_MARK = r"[#>*\s]*{}\s*[*]*\s*:\s*[*]*"
_INSTR = re.compile(_MARK.format("instruction"), re.IGNORECASE)
_RESP = re.compile(_MARK.format("response"), re.IGNORECASE)
_END = re.compile(r"\n\s*(?:#{2,}|Text\s*:|Instruction\s*:|Example\s+\d)", re.IGNORECASE)
WORD = re.compile(r"[a-z0-9]+")


def cut_words(text: str, words: int) -> str:
    """``text`` cut to its first ``words`` words, with " ..." when something was cut."""
    w = text.split()
    return " ".join(w[:words]) + (" ..." if len(w) > words else "")


def record_key(r: Record) -> tuple[str, str]:
    return str(r.metadata.get("source", "")), str(r.metadata.get("id", ""))


def instruction_row(rec: InstructionRecord, **extra: Any) -> dict[str, Any]:
    return {"instruction": rec.instruction, "input": rec.input, "response": rec.response} | extra


def normalise(s: str) -> str:
    return " ".join(WORD.findall(s.lower()))


def parse_output(text: str) -> tuple[str, str] | str:
    """(instruction, response) read from a generation in the marked format, or the failure
    reason (``no_markers``, ``empty_field``). Tolerates markdown bold / headings around the
    markers and text after the response (a next example) is cut."""
    mi = _INSTR.search(text)
    if mi is None:
        return "no_markers"
    mr = _RESP.search(text, mi.end())
    if mr is None:
        return "no_markers"
    instruction = text[mi.end() : mr.start()].strip().strip("*").strip()
    rest = text[mr.end() :]
    end = _END.search(rest)
    response = (rest[: end.start()] if end else rest).strip().strip("*").strip()
    if response.startswith("```") or instruction.startswith("<"):
        return "empty_field" if not response.strip("`") else (instruction, response)
    if not instruction or not response:
        return "empty_field"
    return instruction, response


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (lexical diversity)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        w = WORD.findall(t.lower())
        grams += [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
