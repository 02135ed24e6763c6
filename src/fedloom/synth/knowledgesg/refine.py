"""The refine stage's steps: the writer's outputs read back into candidate instructions (each
failure counted by reason), near duplicates dropped, the professional's ratings (KnowledgeSG's
filter) and the answers (the professional's, or the writer model's own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedloom.generation import GenerationConfig, TextGenerator, read_job, run_complete
from fedloom.synth.common import WORD, cut_words, normalise, parse_output
from fedloom.synth.knowledgesg.config import KSGConfig
from fedloom.synth.knowledgesg.methods import SynthMethod
from fedloom.synth.knowledgesg.prompts import (
    ANSWER_SYSTEM,
    RATE_PROMPT,
    RATE_SYSTEM,
    parse_instruction,
    parse_rating_reply,
)

Candidate = dict[str, Any]
"""{id, instruction, response ("" until answered), examples (ids shown), rating?}"""


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def candidates(
    rows: Sequence[dict[str, Any]],
    m: SynthMethod,
    p: KSGConfig,
    shown: dict[str, list[str]],
    by_id: dict[str, Any],
    fail: Counter[str],
) -> list[Candidate]:
    """The writer's outputs (job rows, in prompt order) as candidates: parsed (a pair, or an
    instruction only when someone else answers), long enough, not a copy of an example shown
    in its prompt, not a duplicate. Every output left out is counted in ``fail``."""
    from fedloom.embed import tfidf_pair_similarity

    out: list[Candidate] = []
    seen: set[str] = set()
    for row in sorted(rows, key=lambda r: int(r["id"].rsplit("-", 1)[1])):
        pid, text = row["id"], row["generations"][0]["text"]
        if m.answers == "writer":
            parsed = parse_output(text)
            if isinstance(parsed, str):
                fail[parsed] += 1
                continue
            instr, resp = parsed
        else:
            got = parse_instruction(text)
            if got in ("no_markers", "empty_field"):
                fail[got] += 1
                continue
            instr, resp = got, ""
        if len(WORD.findall(instr.lower())) < p.min_instruction_words:
            fail["too_short"] += 1
            continue
        examples = [by_id[e]["instruction"] for e in shown[pid]]
        if (
            max((tfidf_pair_similarity(instr, e) for e in examples), default=0.0)
            > p.max_example_similarity
        ):
            fail["copied_example"] += 1
            continue
        if normalise(instr) in seen:
            fail["duplicate"] += 1
            continue
        seen.add(normalise(instr))
        out.append({"id": pid, "instruction": instr, "response": resp, "examples": shown[pid]})
    return out


def drop_near_duplicates(
    cand: list[Candidate], p: KSGConfig, fail: Counter[str]
) -> list[Candidate]:
    """Candidates whose instruction embeddings are near copies of an earlier one, dropped."""
    if not cand:
        return cand
    from fedloom.embed import get_embedder, near_duplicates

    emb = get_embedder("minilm", [c["instruction"] for c in cand])
    keep, _ = near_duplicates(emb.encode([c["instruction"] for c in cand]), p.near_duplicate)
    fail["near_duplicate"] += len(cand) - len(keep)
    return [cand[i] for i in keep]


def rate(
    prof: TextGenerator, cand: list[Candidate], p: KSGConfig, folder: Path, fail: Counter[str]
) -> list[Candidate]:
    """KnowledgeSG's filter: the professional rates each instruction 1-10; unrated and below
    ``min_rating`` are dropped (counted)."""
    items = [
        (c["id"], [system(RATE_SYSTEM), user(RATE_PROMPT.format(q=c["instruction"]))]) for c in cand
    ]
    run_complete(prof, items, GenerationConfig(max_new_tokens=12, batch_size=p.generation.batch_size),
            folder / "ratings.jsonl")  # fmt: skip
    ratings = read_job(folder / "ratings.jsonl", [i for i, _ in items]).texts()
    kept = []
    for c in cand:
        reply = ratings.get(c["id"])
        c["rating"] = parse_rating_reply(reply) if reply is not None else None
        if c["rating"] is None:
            fail["unrated"] += 1
        elif c["rating"] < p.min_rating:
            fail["low_rating"] += 1
        else:
            kept.append(c)
    return kept


def few_shot(
    m: SynthMethod, shown: dict[str, list[str]], by_id: dict[str, Any], words: int
) -> Callable[[str], list[dict[str, str]]]:
    """The -icl variants show their prompt's example pairs to the answering call as earlier
    chat turns; the others answer the bare instruction."""

    def turns(pid: str) -> list[dict[str, str]]:
        if m.show != "pair" or not shown.get(pid):
            return []
        out = []
        for e in shown[pid]:
            out += [user(cut_words(by_id[e]["instruction"], words))]
            out += [{"role": "assistant", "content": cut_words(by_id[e]["response"], words)}]
        return out

    return turns


def answer(
    answerer: TextGenerator,
    cand: list[Candidate],
    turns: Callable[[str], list[dict[str, str]]] | None,
    p: KSGConfig,
    folder: Path,
    fail: Counter[str],
) -> list[Candidate]:
    """Each candidate answered: by the professional (``turns`` None: its own system prompt) or
    by the writer model with the few-shot ``turns``; failed and empty answers counted."""
    items = [
        (c["id"], [*turns(c["id"]), user(c["instruction"])] if turns is not None
         else [system(ANSWER_SYSTEM), user(c["instruction"])])
        for c in cand
    ]  # fmt: skip
    acfg = GenerationConfig(max_new_tokens=p.answer_tokens, batch_size=p.generation.batch_size)
    run_complete(answerer, items, acfg, folder / "answers.jsonl")
    answers = read_job(folder / "answers.jsonl", [i for i, _ in items]).texts()
    kept = []
    for c in cand:
        a = answers.get(c["id"])
        if a is None:
            fail["answer_error"] += 1
        elif not a.strip():
            fail["empty_answer"] += 1
        else:
            kept.append(c | {"response": a.strip()})
    return kept
