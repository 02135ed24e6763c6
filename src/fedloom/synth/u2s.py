"""FedIT-U2S (Ye et al. 2024, "unstructured to structured"): clients hold only raw text; each
turns its text pieces into instruction–response pairs with an LLM prompted by k examples
retrieved from a shared example pool, then the clients run federated instruction tuning on the
generated pairs. No public code exists; the choices here are documented in docs/u2s.md.

Stages (``fedloom pipeline configs/u2s.yaml``):

1. ``data`` — per domain, one seeded order of the source's records is cut into disjoint slices:
   gold pairs for evaluation, the example pool, and the clients' raw text (chunked into pieces at
   sentence boundaries, dealt to the domain's clients). Disjointness is asserted.
2. ``select`` — k pool examples per piece: ``retrieval`` (embedding cosine), ``random``, or
   ``fixed`` (the same k for everyone).
3. ``generate`` — one prompt per piece (task statement, the k examples, the piece, an output
   slot in a marked format); a resumable generation job.
4. ``parse`` — each output read back into an instruction record with provenance, or counted as
   a failure by reason; data-quality figures.
5. ``train`` — federated instruction tuning on each client's own generated pairs (any
   algorithm), held-out loss on the gold pairs of every domain.
6. ``evaluate`` — the matching suites on the base model and the tuned adapter, with every item
   used as client text or pool example left out.

``train_on: gold`` skips 2–4 and trains on the real pairs behind the clients' text (the upper
bound).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord, Record, as_instruction
from fedloom.data.sources import load_source_report
from fedloom.errors import FedloomError
from fedloom.experiment.collect import item_comparisons
from fedloom.experiment.evaluate import Scorer, heldout_vs_base, suite_vs_base
from fedloom.experiment.guards import require_disjoint
from fedloom.experiment.report import ResultTable, stage_costs, write_report
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.generation import GenerationConfig, GeneratorConfig, read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
    stage_key,
)
from fedloom.settings import _require
from fedloom.synth.common import (
    WORD,
    cut_words,
    distinct_n,
    instruction_row,
    normalise,
    parse_output,
    read_jsonl,
    record_key,
    write_jsonl,
)
from fedloom.synth.text import as_text, as_triple, chunk_text
from fedloom.utils import rng_for

PROMPT_VERSION = "u2s-v1"
SELECTIONS = ("retrieval", "random", "fixed")


class U2SError(FedloomError, ValueError):
    """The U2S data cannot be built as configured."""


@dataclass
class DomainConfig:
    name: str
    """Domain label (medicine, knowledge, math ...): held-out loss is reported per domain."""
    text_source: str
    """Registered source whose records give the clients' raw text (a document's text, a worked
    solution, a multiple-choice explanation)."""
    clients: list[int]
    """Clients holding this domain's text (pieces are dealt among them)."""
    pieces: int = 32
    """Text pieces generated from, per domain."""
    pool_source: str | None = None
    """Structured source of the example pool's triples (default: `text_source`)."""
    pool: int = 40
    gold_source: str | None = None
    """Source of the gold instruction pairs held out for evaluation (default: `pool_source`)."""
    gold: int = 40
    suite: str | None = None
    """The benchmark suite matching this domain (gsm8k, medmcqa ...), scored in `evaluate`."""

    def __post_init__(self) -> None:
        import fedloom.data.catalog  # noqa: F401
        from fedloom.data.sources import SOURCES

        for what in ("text_source", "pool_source", "gold_source"):
            name = getattr(self, what)
            _require(
                name is None or name in SOURCES,
                f"`u2s.domains[{self.name}].{what}` is {name!r}; choose one of {sorted(SOURCES)}",
            )
        _require(bool(self.clients), f"`u2s.domains[{self.name}].clients` is empty")
        _require(self.pieces >= 1 and self.pool >= 0 and self.gold >= 1, "pieces/gold >= 1")

    @property
    def pool_from(self) -> str:
        return self.pool_source or self.text_source

    @property
    def gold_from(self) -> str:
        return self.gold_source or self.pool_from


@dataclass
class U2SConfig:
    domains: list[DomainConfig]
    num_clients: int
    selection: str = "retrieval"
    """How the k examples are chosen: retrieval, random or fixed (the paper's ablation)."""
    k: int = 3
    embedder: str = "minilm"
    """Retrieval embedder: minilm (all-MiniLM-L6-v2) or tfidf."""
    piece_tokens: int = 200
    """Maximum piece length (generator tokens), cut at sentence boundaries."""
    min_piece_words: int = 20
    """Shorter pieces are dropped (counted)."""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=256, temperature=0.7, top_p=0.9)
    )
    example_words: int = 120
    """Pool examples are shown cut to this many words per field (keeps prompts short)."""
    max_response_words: int = 300
    """Parsed responses longer than this are dropped (`too_long`)."""
    min_grounding: float = 0.3
    """Share of the pair's content words that must appear in the piece (`not_grounded`)."""
    train_on: str = "generated"
    """`generated` (U2S) or `gold` (the real pairs behind the clients' text: the upper bound)."""
    suite_limit: int = 100
    """Items per suite in `evaluate`."""

    def __post_init__(self) -> None:
        _require(self.selection in SELECTIONS, f"`u2s.selection` must be one of {SELECTIONS}")
        _require(self.k >= 1, "`u2s.k` must be >= 1")
        _require(self.piece_tokens >= 16, "`u2s.piece_tokens` must be >= 16")
        _require(self.train_on in ("generated", "gold"), "`u2s.train_on`: generated or gold")
        _require(0 <= self.min_grounding <= 1, "`u2s.min_grounding` must be in [0, 1]")
        _require(len(self.domains) > 0, "`u2s.domains` is empty")
        from fedloom.embed import EMBEDDERS

        _require(
            self.embedder in EMBEDDERS,
            f"`u2s.embedder` is {self.embedder!r}; choose one of {sorted(EMBEDDERS)}",
        )
        covered = sorted({c for d in self.domains for c in d.clients})
        _require(
            covered == list(range(self.num_clients)),
            f"`u2s.domains[].clients` cover {covered}; every client 0..{self.num_clients - 1} "
            "needs text and no other ids may appear",
        )
        for d in self.domains:
            _require(d.pool >= self.k, f"`u2s.domains[{d.name}].pool` must be >= k ({self.k})")


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


# --- stage 2: selection -----------------------------------------------------------------------


def select_examples(
    selection: str,
    k: int,
    seed: int,
    n: int,
    n_pool: int,
    piece_emb: Any = None,
    pool_emb: Any = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """k pool indices for each of ``n`` pieces (and their cosines; 0 for random/fixed);
    ``retrieval`` ranks by the embeddings."""
    if selection == "retrieval":
        from fedloom.embed import top_k

        idx, sims = top_k(piece_emb, pool_emb, k)
        return idx.tolist(), [[round(float(x), 4) for x in row] for row in sims]
    if selection == "fixed":
        fixed = rng_for(seed, "u2s-fixed").sample(range(n_pool), k)
        return [list(fixed) for _ in range(n)], [[0.0] * k for _ in range(n)]
    rng = rng_for(seed, "u2s-random")
    return [rng.sample(range(n_pool), k) for _ in range(n)], [[0.0] * k for _ in range(n)]


# --- stage 3: prompts -------------------------------------------------------------------------

TASK = (
    "You turn a passage of text into one instruction-response pair for training an assistant. "
    "The instruction is a question or task a user might ask that the passage answers; the "
    "response answers it fully and correctly, using the passage's facts. Do not mention "
    '"the passage" or "the text" in the instruction.'
)


def build_prompt(piece: str, examples: list[dict[str, Any]], example_words: int = 120) -> str:
    """Task statement, the k examples as text -> instruction -> response (each field cut to
    ``example_words``), the piece, and the output slot, in the marked format
    :func:`parse_output` reads back."""
    parts = [TASK, ""]
    for i, ex in enumerate(examples, 1):
        parts += [
            f"### Example {i}",
            f"Text: {cut_words(ex['text'], example_words)}",
            f"Instruction: {cut_words(ex['instruction'], example_words)}",
            f"Response: {cut_words(ex['response'], example_words)}",
            "",
        ]
    parts += [
        "### Your turn",
        f"Text: {piece}",
        "Write exactly one pair for this text, in the same format:",
        "Instruction: <the instruction>",
        "Response: <the response>",
    ]
    return "\n".join(parts)


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


# --- the pipeline -----------------------------------------------------------------------------


@register_pipeline
class U2S(PipelineMethod):
    name = "u2s"
    config_cls = U2SConfig

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: U2SConfig = cfg.params
        data = Stage("data", lambda ctx: self._data(ctx, cfg), {"u2s": asdict(p)})
        train = Stage("train", lambda ctx: self._train(ctx, cfg), {"train_on": p.train_on})
        evaluate = Stage("evaluate", lambda ctx: self._evaluate(ctx, cfg), {})
        paired = Stage("gold_loss", lambda ctx: self._gold_loss(ctx, cfg), {"resamples": 2000})
        if p.train_on == "gold":
            return [data, train, evaluate, paired]
        sel = {"selection": p.selection, "k": p.k, "embedder": p.embedder}
        gen = {"generator": asdict(p.generator), "generation": asdict(p.generation)}
        return [
            data,
            Stage("select", lambda ctx: self._select(ctx, cfg), sel),
            Stage("generate", lambda ctx: self._generate(ctx, cfg), gen),
            Stage("parse", lambda ctx: self._parse(ctx, cfg), {"prompt_version": PROMPT_VERSION}),
            train,
            evaluate,
            paired,
        ]

    # stage bodies: each reads earlier stages' files, writes its own

    def _data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.models.loader import load_tokenizer

        p: U2SConfig = cfg.params
        tok = (
            load_tokenizer(p.generator.model, need_chat=False)
            if p.generator.backend == "local"
            else None
        )

        def count(s: str) -> int:
            return (
                len(tok(s, add_special_tokens=False)["input_ids"])
                if tok
                else len(s.split()) * 4 // 3
            )

        summary = build_data(p, cfg.seed, count, ctx.folder)
        ctx.console.print(summary)
        return summary

    def _select(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: U2SConfig = cfg.params
        data = ctx.folder_of("data")
        pieces, pool = read_jsonl(data / "pieces.jsonl"), read_jsonl(data / "pool.jsonl")
        piece_emb: Any = None
        pool_emb: Any = None
        if p.selection == "retrieval":
            from fedloom.embed import get_embedder

            emb = get_embedder(p.embedder, [x["text"] for x in pool + pieces])
            piece_emb = emb.encode([x["text"] for x in pieces])
            pool_emb = emb.encode([x["text"] for x in pool])
        idx, sims = select_examples(
            p.selection, p.k, cfg.seed, len(pieces), len(pool), piece_emb, pool_emb
        )
        rows = [
            {"id": x["id"], "examples": i, "scores": s}
            for x, i, s in zip(pieces, idx, sims, strict=True)
        ]
        write_jsonl(ctx.folder / "selections.jsonl", rows)
        same_domain = sum(
            pool[j]["domain"] == x["domain"] for x, i in zip(pieces, idx, strict=True) for j in i
        )
        return {
            "selection": p.selection,
            "pieces": len(rows),
            "examples_from_same_domain": round(same_domain / max(1, len(rows) * p.k), 4),
            "distinct_examples_used": len({j for i in idx for j in i}),
        }

    def _generate(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.generation import build_generator, run_job

        p: U2SConfig = cfg.params
        data, sel = ctx.folder_of("data"), ctx.folder_of("select")
        pieces = {x["id"]: x for x in read_jsonl(data / "pieces.jsonl")}
        pool = read_jsonl(data / "pool.jsonl")
        items = [
            (
                s["id"],
                build_prompt(
                    pieces[s["id"]]["text"], [pool[j] for j in s["examples"]], p.example_words
                ),
            )
            for s in read_jsonl(sel / "selections.jsonl")
        ]
        gen = build_generator(p.generator, chat=p.generation.chat)
        rep = run_job(gen, items, p.generation, ctx.folder / "generations.jsonl")
        still = rep.failed
        ctx.console.print(
            f"generated {rep.generated} prompts ({rep.done_before} done before), {rep.failed} "
            f"failed, {rep.tokens} tokens ({rep.prompt_tokens} prompt tokens), "
            f"{rep.tokens_per_second:.1f} tok/s"
        )
        return {
            "prompts": len(items),
            "generated": rep.generated,
            "done_before": rep.done_before,
            "failed": still,
            "tokens": rep.tokens,
            "prompt_tokens": rep.prompt_tokens,
            "seconds": round(rep.seconds, 1),
            "tokens_per_second": round(rep.tokens_per_second, 2),
            "generator": gen.name,
        }

    def _parse(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: U2SConfig = cfg.params
        data, sel = ctx.folder_of("data"), ctx.folder_of("select")
        pieces = {x["id"]: x for x in read_jsonl(data / "pieces.jsonl")}
        pool = read_jsonl(data / "pool.jsonl")
        selections = {s["id"]: s["examples"] for s in read_jsonl(sel / "selections.jsonl")}
        job = read_job(ctx.folder_of("generate") / "generations.jsonl", selections)
        failed = [{"id": pid, "error": e} for pid, e in job.failed.items()]
        kept, rep = parse_generations(job.ok + failed, pieces, pool, selections, p)
        write_jsonl(ctx.folder / "pairs.jsonl", kept)
        summary = rep.as_dict()
        texts = [f"{r['instruction']} {r['response']}" for r in kept]
        summary["distinct_1"] = round(distinct_n(texts, 1), 4)
        summary["distinct_2"] = round(distinct_n(texts, 2), 4)
        summary["pairs_per_client"] = {
            str(c): n for c, n in sorted(Counter(r["client"] for r in kept).items())
        }
        if len(kept) >= 2:
            from fedloom.embed import embedding_spread, get_embedder

            emb = get_embedder(p.embedder, [r["instruction"] for r in kept])
            summary["embedding_spread"] = round(
                embedding_spread(emb.encode([r["instruction"] for r in kept])), 4
            )
        ctx.console.print(summary)
        return summary

    def _train(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: U2SConfig = cfg.params
        data = ctx.folder_of("data")
        if p.train_on == "gold":
            rows = read_jsonl(data / "gold_train.jsonl")
        else:
            rows = read_jsonl(ctx.folder_of("parse") / "pairs.jsonl")
        by_client = [[r for r in rows if r["client"] == c] for c in range(p.num_clients)]
        for c, mine in enumerate(by_client):
            if not mine:
                raise U2SError(
                    f"client {c} has no training pairs ({p.train_on}): every output of its "
                    "pieces failed to parse (see the parse stage's failures) — raise "
                    "`u2s.domains[].pieces` or use a stronger `u2s.generator.model`"
                )
        sources = client_sources(ctx.folder, by_client)
        sources += [heldout_source(data / f"gold_{d.name}.jsonl", d.name) for d in p.domains]
        res = train_run(
            cfg.train,
            ctx.folder / "run",
            sources,
            ctx.console,
            overrides={"eval": {"max_examples": max(d.gold for d in p.domains)}},
        )
        return {"train_on": p.train_on, "pairs": len(rows)} | res.brief()

    def _evaluate(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        """Each domain's suite, base and tuned, per item (the base is scored once per pipeline:
        cached by content); items the clients' text came from are left out."""
        p: U2SConfig = cfg.params
        suites = [d.suite for d in p.domains if d.suite]
        if not suites:
            return {"suites": {}, "note": "no domain names a `suite`"}
        used = {
            tuple(k) for k in json.loads((ctx.folder_of("data") / "used_keys.json").read_text())
        }
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
        adapter = ctx.folder_of("train") / "run" / "adapter"
        out: dict[str, Any] = {}
        for name in suites:
            mine = {k for k in used if k[0] == name}
            res = suite_vs_base(scorer, adapter, name, p.suite_limit, cfg.seed, mine, ctx.folder)
            out[name] = res
            ctx.console.print(f"{name}: base {res['base']}  tuned {res['tuned']}")
        return {"suites": out}

    def _gold_loss(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        """Per-example loss on each domain's gold pairs, base and tuned, saved per item; this
        seed's paired difference with its 95% bootstrap interval."""
        p: U2SConfig = cfg.params
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
        adapter = ctx.folder_of("train") / "run" / "adapter"
        out: dict[str, Any] = {}
        for d in p.domains:
            rows = read_jsonl(ctx.folder_of("data") / f"gold_{d.name}.jsonl")
            recs = [InstructionRecord(r["instruction"], r["response"], r["input"]) for r in rows]
            out[d.name] = heldout_vs_base(
                scorer, adapter, recs, cfg.train.data.max_seq_len, ctx.folder, d.name, cfg.seed
            )
            ctx.console.print(f"{d.name}: {out[d.name]}")
        return out

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        """Tuned vs base on every domain's gold pairs (loss) and suite, pooled over seeds."""
        p: U2SConfig = cfg.params
        arm = p.selection if p.train_on == "generated" else "gold pairs"
        sets = [(f"{d.name} gold loss", "gold_loss", d.name) for d in p.domains]
        sets += [(f"{d.suite} ({d.name})", "evaluate", d.suite) for d in p.domains if d.suite]
        rows = item_comparisons(ctx, cfg.seeds, sets, f"tuned ({arm})", "base")
        keys = [stage_key(n, s) for s in cfg.seeds for n in ("generate", "train", "gold_loss")]
        provenance = {
            f"parse s{s}": ctx.summary_of("parse", s).get("failures", {})
            | {"kept": ctx.summary_of("parse", s).get("kept")}
            for s in cfg.seeds
            if ctx.has("parse", s)
        }
        table = ResultTable(
            f"FedIT-U2S — {p.num_clients} clients, trained on {arm}",
            rows,
            intro=f"Seeds {cfg.seeds}; each seed draws its own pieces, examples and generations. "
            "Rows compare the tuned model with the base model on the same items.",
            provenance=provenance,
            costs=stage_costs(ctx, keys),
            configs={"pipeline": (ctx.out / "pipeline.yaml").read_text()},
        )
        return write_report(ctx.folder, table)
