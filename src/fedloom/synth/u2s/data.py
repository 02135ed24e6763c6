"""Stage 1: disjoint gold / pool / client-text slices per domain, pieces at sentence boundaries."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
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
from fedloom.synth.u2s.config import DomainConfig, U2SConfig
from fedloom.utils import rng_for

# --- stage 1: data ----------------------------------------------------------------------------


class Slicer:
    """One seeded order per source; hands out the next records not yet taken, so no record
    serves two roles (gold, pool, client text)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.cache: dict[str, list[Record]] = {}
        self.taken: dict[str, set[int]] = {}

    def records(self, name: str) -> list[Record]:
        if name not in self.cache:
            recs, _ = load_source_report(name)
            order = list(range(len(recs)))
            rng_for(self.seed, "u2s", name).shuffle(order)
            self.cache[name] = [recs[i] for i in order]
            self.taken[name] = set()
        return self.cache[name]

    def take(self, name: str, n: int | None, ok: Callable[[Record], bool]) -> list[Record]:
        """The next ``n`` records of ``name`` not yet taken and accepted by ``ok``."""
        out: list[Record] = []
        for i, r in enumerate(self.records(name)):
            if n is not None and len(out) >= n:
                break
            if i not in self.taken[name] and ok(r):
                self.taken[name].add(i)
                out.append(r)
        return out


def is_pair(r: Record) -> bool:
    try:
        as_instruction(r)
        return True
    except TypeError:
        return False


def domain_pieces(
    d: DomainConfig,
    cfg: U2SConfig,
    slicer: Slicer,
    count_tokens: Any,
    used: set[tuple[str, str]],
    skipped: Counter[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A domain's client-text pieces (records chunked at sentence boundaries, dealt to its
    clients in turn) and the real pairs behind them (the upper bound's training data)."""
    got: list[dict[str, Any]] = []
    gold_train: list[dict[str, Any]] = []
    while len(got) < d.pieces:
        nxt = slicer.take(d.text_source, 1, lambda r: as_text(r) is not None)
        if not nxt:
            skipped["source exhausted"] += 1
            break
        r = nxt[0]
        src, rid = record_key(r)
        used.add((src, rid))
        first = len(got)
        for j, text in enumerate(chunk_text(as_text(r) or "", count_tokens, cfg.piece_tokens)):
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
        if is_pair(r) and len(got) > first:  # the real pair behind this text: upper bound
            gold_train.append(
                instruction_row(as_instruction(r), client=got[first]["client"], domain=d.name)
            )
    if not gold_train:
        # raw text without pairs behind it (Wikipedia): the upper bound trains this domain's
        # clients on as many real pairs of its gold source, unused elsewhere
        for j, r in enumerate(slicer.take(d.gold_from, d.pieces, is_pair)):
            used.add(record_key(r))
            client = d.clients[j % len(d.clients)]
            gold_train.append(instruction_row(as_instruction(r), client=client, domain=d.name))
    return got, gold_train


def build_data(cfg: U2SConfig, seed: int, count_tokens: Any, folder: Path) -> dict[str, Any]:
    """Slices per source (gold, pool, client text) from one seeded order, so that no record
    serves two roles; writes pieces.jsonl, pool.jsonl, gold_<domain>.jsonl, gold_train.jsonl
    and used_keys.json (what evaluation must leave out)."""
    slicer = Slicer(seed)
    skipped: Counter[str] = Counter()
    gold_rows: dict[str, list[dict[str, Any]]] = {}
    pool_rows: list[dict[str, Any]] = []
    pieces: list[dict[str, Any]] = []
    gold_train: list[dict[str, Any]] = []
    used: set[tuple[str, str]] = set()
    gold_keys: set[tuple[str, str]] = set()
    for d in cfg.domains:  # gold first: the evaluation items are fixed before anything else
        gold = slicer.take(d.gold_from, d.gold, is_pair)
        _require(len(gold) == d.gold, f"domain {d.name}: only {len(gold)} gold pairs available")
        gold_rows[d.name] = [instruction_row(as_instruction(r), domain=d.name) for r in gold]
        gold_keys |= {record_key(r) for r in gold}
    for d in cfg.domains:
        for r in slicer.take(d.pool_from, d.pool, lambda r: as_triple(r) is not None):
            text, instr, resp = as_triple(r) or ("", "", "")
            src, rid = record_key(r)
            pool_rows.append(
                {"id": f"{src}:{rid}", "domain": d.name, "text": text}
                | {"instruction": instr, "response": resp}
            )
            used.add((src, rid))
    for d in cfg.domains:
        got, pairs = domain_pieces(d, cfg, slicer, count_tokens, used, skipped)
        pieces += got
        gold_train += pairs
    require_disjoint(gold_keys, used, "gold evaluation items reused as pool or client text")
    require_disjoint({p["text"] for p in pool_rows}, {p["text"] for p in pieces},
                     "pieces that are also pool texts")  # fmt: skip
    write_jsonl(folder / "pieces.jsonl", pieces)
    write_jsonl(folder / "pool.jsonl", pool_rows)
    write_jsonl(folder / "gold_train.jsonl", gold_train)
    for name, rows in gold_rows.items():
        write_jsonl(folder / f"gold_{name}.jsonl", rows)
    (folder / "used_keys.json").write_text(json.dumps(sorted(used)))
    per_client = Counter(p["client"] for p in pieces)
    return {
        "pieces": dict(Counter(p["domain"] for p in pieces)),
        "pieces_per_client": {str(c): n for c, n in sorted(per_client.items())},
        "pool": dict(Counter(p["domain"] for p in pool_rows)),
        "gold": {k: len(v) for k, v in gold_rows.items()},
        "gold_train": len(gold_train),
        "skipped": dict(skipped),
        "disjoint": True,
    }
