"""Stage 1: disjoint gold / pool / client-text slices per domain, pieces at sentence boundaries."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from fedloom.data.schema import Record, as_instruction
from fedloom.data.sources import load_source_report
from fedloom.experiment.guards import require_disjoint
from fedloom.settings import _require
from fedloom.synth.common import (
    instruction_row,
    record_key,
    write_jsonl,
)
from fedloom.synth.text import as_text, as_triple, chunk_text
from fedloom.synth.u2s.config import U2SConfig
from fedloom.utils import rng_for

# --- stage 1: data ----------------------------------------------------------------------------


def build_data(cfg: U2SConfig, seed: int, count_tokens: Any, folder: Path) -> dict[str, Any]:
    """Slices per source (gold, pool, client text) from one seeded order, so that no record
    serves two roles; writes pieces.jsonl, pool.jsonl, gold_<domain>.jsonl, gold_train.jsonl
    and used_keys.json (what evaluation must leave out)."""
    cache: dict[str, list[Record]] = {}
    taken: dict[str, set[int]] = {}
    skipped: Counter[str] = Counter()

    def records(name: str) -> list[Record]:
        if name not in cache:
            recs, _ = load_source_report(name)
            order = list(range(len(recs)))
            rng_for(seed, "u2s", name).shuffle(order)
            cache[name] = [recs[i] for i in order]
            taken[name] = set()
        return cache[name]

    def take(name: str, n: int | None, ok: Any) -> list[Record]:
        """The next ``n`` records of ``name`` not yet taken and accepted by ``ok``."""
        out: list[Record] = []
        for i, r in enumerate(records(name)):
            if n is not None and len(out) >= n:
                break
            if i in taken[name]:
                continue
            if not ok(r):
                continue
            taken[name].add(i)
            out.append(r)
        return out

    gold_rows: dict[str, list[dict[str, Any]]] = {}
    pool_rows: list[dict[str, Any]] = []
    pieces: list[dict[str, Any]] = []
    gold_train: list[dict[str, Any]] = []
    used: set[tuple[str, str]] = set()
    gold_keys: set[tuple[str, str]] = set()

    def gold_ok(r: Record) -> bool:
        try:
            as_instruction(r)
            return True
        except TypeError:
            return False

    for d in cfg.domains:  # gold first: the evaluation items are fixed before anything else
        gold = take(d.gold_from, d.gold, gold_ok)
        _require(len(gold) == d.gold, f"domain {d.name}: only {len(gold)} gold pairs available")
        gold_rows[d.name] = [instruction_row(as_instruction(r), domain=d.name) for r in gold]
        gold_keys |= {record_key(r) for r in gold}
    for d in cfg.domains:
        for r in take(d.pool_from, d.pool, lambda r: as_triple(r) is not None):
            text, instr, resp = as_triple(r) or ("", "", "")
            src, rid = record_key(r)
            pool_rows.append(
                {"id": f"{src}:{rid}", "domain": d.name, "text": text}
                | {"instruction": instr, "response": resp}
            )
            used.add((src, rid))
    for d in cfg.domains:
        got: list[dict[str, Any]] = []
        while len(got) < d.pieces:
            nxt = take(d.text_source, 1, lambda r: as_text(r) is not None)
            if not nxt:
                skipped["source exhausted"] += 1
                break
            r = nxt[0]
            src, rid = record_key(r)
            used.add((src, rid))
            chunks = chunk_text(as_text(r) or "", count_tokens, cfg.piece_tokens)
            first = len(got)
            for j, text in enumerate(chunks):
                if len(got) >= d.pieces:
                    break
                if len(text.split()) < cfg.min_piece_words:
                    skipped["piece shorter than min_piece_words"] += 1
                    continue
                client = d.clients[len(got) % len(d.clients)]
                got.append(
                    {"id": f"{d.name}-{src}:{rid}-{j}", "client": client, "domain": d.name}
                    | {"text": text, "source": src, "record": rid}
                )
            if gold_ok(r) and len(got) > first:  # the real pair behind this text: upper bound
                rec = as_instruction(r)
                gold_train.append(instruction_row(rec, client=got[first]["client"], domain=d.name))
        if not any(r["domain"] == d.name for r in gold_train):
            # raw text without pairs behind it (Wikipedia): the upper bound trains this domain's
            # clients on as many real pairs of its gold source, unused elsewhere
            for j, r in enumerate(take(d.gold_from, d.pieces, gold_ok)):
                used.add(record_key(r))
                client = d.clients[j % len(d.clients)]
                gold_train.append(instruction_row(as_instruction(r), client=client, domain=d.name))
        pieces += got
    require_disjoint(gold_keys, used, "gold evaluation items reused as pool or client text")
    require_disjoint(
        {p["text"] for p in pool_rows},
        {p["text"] for p in pieces},
        "pieces that are also pool texts",
    )
    write_jsonl(folder / "pieces.jsonl", pieces)
    write_jsonl(folder / "pool.jsonl", pool_rows)
    write_jsonl(folder / "gold_train.jsonl", gold_train)
    for name, rows in gold_rows.items():
        write_jsonl(folder / f"gold_{name}.jsonl", rows)
    (folder / "used_keys.json").write_text(json.dumps(sorted(used)))
    return {
        "pieces": dict(Counter(p["domain"] for p in pieces)),
        "pieces_per_client": {
            str(c): n for c, n in sorted(Counter(p["client"] for p in pieces).items())
        },
        "pool": dict(Counter(p["domain"] for p in pool_rows)),
        "gold": {k: len(v) for k, v in gold_rows.items()},
        "gold_train": len(gold_train),
        "skipped": dict(skipped),
        "disjoint": True,
    }
