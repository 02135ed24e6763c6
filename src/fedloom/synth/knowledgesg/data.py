"""Stage 1: private, held-out and public pairs (canaries planted), kept disjoint."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord, MultipleChoiceRecord
from fedloom.data.sources import load_source_report
from fedloom.experiment.guards import require_disjoint
from fedloom.synth.common import (
    normalise,
    record_key,
    write_jsonl,
)
from fedloom.synth.knowledgesg.config import KSGConfig, KSGError

# --- stage 1: data ----------------------------------------------------------------------------


def _mc_pair(r: MultipleChoiceRecord) -> tuple[str, str] | None:
    """(question with its options, right option + explanation); None without an explanation.
    The options stay in the question: many MedMCQA stems ("All of the following except:")
    cannot be answered without them."""
    exp = " ".join(str(r.metadata.get("explanation") or "").split())
    if not exp:
        return None
    question = f"{r.question.strip()} Options: {'; '.join(c.strip() for c in r.choices)}."
    return question, f"{r.choices[r.answer].strip()}. {exp}"


def shuffled(name: str, seed: int) -> list[Any]:
    """A source's records in a seeded order."""
    recs, _ = load_source_report(name)
    order = list(recs)
    random.Random(f"ksg:{seed}:{name}").shuffle(order)
    return order


def private_pairs(
    cfg: KSGConfig, seed: int, max_words: int, skipped: Counter[str]
) -> list[tuple[Any, str, str]]:
    """``private + heldout`` (record, question, answer-with-explanation) pairs of the private
    source; questions without an explanation or too long are skipped (counted)."""
    pairs: list[tuple[Any, str, str]] = []
    for r in shuffled(cfg.private_source, seed):
        if not isinstance(r, MultipleChoiceRecord):
            raise KSGError(f"`private_source` {cfg.private_source!r} is not multiple choice")
        p = _mc_pair(r)
        if p is None:
            skipped["no_explanation"] += 1
        elif len(f"{p[0]} {p[1]}".split()) > max_words:
            skipped["too_long"] += 1
        else:
            pairs.append((r, *p))
        if len(pairs) == cfg.private + cfg.heldout:
            return pairs
    raise KSGError(
        f"{cfg.private_source} offers {len(pairs)} usable pairs; private + heldout needs "
        f"{cfg.private + cfg.heldout} — lower them"
    )


def public_pairs(cfg: KSGConfig, seed: int) -> list[dict[str, Any]]:
    """``public`` seed pairs of the public source (multiple choice or instructions)."""
    public: list[dict[str, Any]] = []
    for r in shuffled(cfg.public_source, seed):
        if isinstance(r, MultipleChoiceRecord):
            pair = {"instruction": r.question.strip(), "response": r.choices[r.answer]}
        elif isinstance(r, InstructionRecord):
            pair = {"instruction": r.instruction, "response": r.response}
        else:
            continue
        public.append(pair | {"id": f"public-{len(public)}", "key": list(record_key(r))})
        if len(public) == cfg.public:
            return public
    raise KSGError(f"{cfg.public_source} offers {len(public)} public pairs; lower `public`")


def with_canaries(
    cfg: KSGConfig, private: list[tuple[Any, str, str]], canaries: list[Any]
) -> list[dict[str, Any]]:
    """The private rows dealt to the clients, with `canary_repeats` copies of each canary
    planted in client 0's data."""
    rows = [
        {"id": f"private-{i}", "instruction": q, "input": "", "response": a}
        | {"client": i % cfg.num_clients, "key": list(record_key(r)), "canary": False}
        for i, (r, q, a) in enumerate(private)
    ]
    for c in canaries:
        for j in range(cfg.canary_repeats):
            rows.append(
                {"id": f"canary-{c.name}-{j}", "instruction": c.question, "input": ""}
                | {"response": c.answer(), "client": 0, "key": ["canary", c.name], "canary": True}
            )
    return rows


def build_data(cfg: KSGConfig, seed: int, max_words: int, folder: Path) -> dict[str, Any]:
    """Private pairs (with canaries), held-out pairs and public seed pairs, disjoint (checked:
    a leak raises). ``max_words``: pairs longer than this are skipped (counted) so they fit
    the training sequence length."""
    from fedloom.privacy.audit import make_canaries

    skipped: Counter[str] = Counter()
    pairs = private_pairs(cfg, seed, max_words, skipped)
    heldout, private = pairs[: cfg.heldout], pairs[cfg.heldout :]
    public = public_pairs(cfg, seed)
    canaries = make_canaries(cfg.canaries, cfg.canary_digits, seed)
    rows = with_canaries(cfg, private, canaries)
    held: list[dict[str, Any]] = [
        {"id": f"heldout-{i}", "instruction": q, "input": "", "response": a}
        | {"key": list(record_key(r))}
        for i, (r, q, a) in enumerate(heldout)
    ]
    # evaluation items never in training or generation inputs
    private_keys = {tuple(x["key"]) for x in rows}
    held_keys = {tuple(x["key"]) for x in held}
    require_disjoint(private_keys, held_keys, "held-out pairs in the private data")
    require_disjoint(
        {normalise(x["instruction"]) for x in held},
        {normalise(x["instruction"]) for x in rows + public},
        "held-out questions in the private data or the public seeds",
    )
    write_jsonl(folder / "private.jsonl", rows)
    write_jsonl(folder / "heldout.jsonl", held)
    write_jsonl(folder / "public.jsonl", public)
    (folder / "canaries.json").write_text(
        json.dumps([{"name": c.name, "secret": c.secret} for c in canaries], indent=1)
    )
    used = sorted(private_keys | held_keys | {tuple(x["key"]) for x in public})
    (folder / "used_keys.json").write_text(json.dumps(used))
    return {
        "private": len(private),
        "canary_rows": len(rows) - len(private),
        "heldout": len(held),
        "public": len(public),
        "per_client": dict(Counter(str(x["client"]) for x in rows)),
        "skipped": dict(skipped),
    }
