"""Stage 4: generations read back into instruction records with provenance, or counted as a failure by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fedloom.synth.common import (
    WORD,
    normalise,
    parse_output,
)
from fedloom.synth.u2s.config import PROMPT_VERSION, U2SConfig

# --- stage 4: parsing -------------------------------------------------------------------------

FAILURES = (
    "no_markers",
    "empty_field",
    "too_long",
    "copied_example",
    "not_grounded",
    "duplicate",
    "generation_error",
)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "by",
        "with",
        "as",
        "at",
        "from",
        "that",
        "this",
        "it",
        "its",
        "which",
        "what",
        "who",
        "whom",
        "how",
        "why",
        "when",
        "where",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
        "may",
        "might",
        "not",
        "no",
        "yes",
        "if",
        "then",
        "than",
        "so",
        "such",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "we",
        "you",
        "your",
        "our",
        "i",
        "me",
        "my",
        "one",
        "two",
        "also",
        "into",
        "about",
        "over",
        "under",
        "after",
        "before",
        "between",
        "each",
        "all",
        "any",
        "more",
        "most",
        "other",
        "some",
        "only",
        "same",
        "very",
        "just",
        "give",
        "explain",
        "describe",
        "following",
    ]
)


def content_words(s: str) -> set[str]:
    return {w for w in WORD.findall(s.lower()) if w not in STOPWORDS and len(w) > 2}


def grounding(pair_text: str, piece: str) -> float:
    """Share of the pair's content words that occur in the piece (1.0 for a pair without
    content words)."""
    words = content_words(pair_text)
    return len(words & content_words(piece)) / len(words) if words else 1.0


@dataclass
class ParseReport:
    total: int = 0
    kept: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    grounding: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outputs": self.total,
            "kept": self.kept,
            "parse_success": round(self.kept / self.total, 4) if self.total else 0.0,
            "failures": {r: self.failures.get(r, 0) for r in FAILURES},
            "grounding_mean": round(sum(self.grounding) / len(self.grounding), 4)
            if self.grounding
            else None,
        }


def parse_generations(
    rows: list[dict[str, Any]],
    pieces: dict[str, dict[str, Any]],
    pool: list[dict[str, Any]],
    selections: dict[str, list[int]],
    cfg: U2SConfig,
) -> tuple[list[dict[str, Any]], ParseReport]:
    """Instruction rows (with provenance) from generation rows; every output that is not kept
    is counted under one failure reason, the first that applies, in :data:`FAILURES` order."""
    rep = ParseReport()
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for row in rows:
        piece = pieces[row["id"]]
        shown = [pool[i] for i in selections[row["id"]]]
        gens = row.get("generations")
        if gens is None:  # the backend failed on this prompt after its retries
            rep.total += 1
            rep.failures["generation_error"] += 1
            continue
        for g_i, g in enumerate(gens):
            rep.total += 1
            parsed = parse_output(g["text"])
            if isinstance(parsed, str):
                rep.failures[parsed] += 1
                continue
            instr, resp = parsed
            if len(resp.split()) > cfg.max_response_words:
                rep.failures["too_long"] += 1
                continue
            if any(normalise(instr) == normalise(ex["instruction"]) for ex in shown) or any(
                normalise(resp) == normalise(ex["response"]) for ex in shown
            ):
                rep.failures["copied_example"] += 1
                continue
            g_score = grounding(f"{instr} {resp}", piece["text"])
            if g_score < cfg.min_grounding:
                rep.failures["not_grounded"] += 1
                continue
            if normalise(instr) in seen:
                rep.failures["duplicate"] += 1
                continue
            seen.add(normalise(instr))
            rep.kept += 1
            rep.grounding.append(g_score)
            kept.append(
                {"instruction": instr, "input": "", "response": resp}
                | {"client": piece["client"], "domain": piece["domain"], "piece": piece["id"]}
                | {"examples": [ex["id"] for ex in shown], "sample": g_i}
                | {"generator": row.get("generator"), "prompt_version": PROMPT_VERSION}
            )
    return kept, rep
