"""The FedIT-U2S pipeline: its stages on the experiment kit, per seed, and the pooled table."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.experiment.collect import item_comparisons
from fedloom.experiment.evaluate import Scorer, heldout_vs_base, suite_vs_base
from fedloom.experiment.report import ResultTable, stage_costs, write_stage_report
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.generation import read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
    stage_key,
)
from fedloom.synth.common import (
    distinct_n,
    read_jsonl,
    write_jsonl,
)
from fedloom.synth.u2s.config import PROMPT_VERSION, U2SConfig, U2SError
from fedloom.synth.u2s.data import build_data
from fedloom.synth.u2s.parse import parse_generations
from fedloom.synth.u2s.prompt import build_prompt
from fedloom.synth.u2s.retrieval import select_examples

# --- the pipeline -----------------------------------------------------------------------------


DATA_FIELDS = ("domains", "num_clients", "piece_tokens", "min_piece_words")
"""The U2S settings the data stage reads (the rest shape selection, generation and parsing)."""


@register_pipeline
class U2S(PipelineMethod):
    name = "u2s"
    config_cls = U2SConfig

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: U2SConfig = cfg.params
        # the data stage (client text, chunking, gold pairs) does not depend on which backend
        # or model generates later: its settings leave them out, and pieces are counted in the
        # trained model's tokens
        data_settings = {k: v for k, v in asdict(p).items() if k in DATA_FIELDS}
        data_settings["chunk_tokenizer"] = cfg.train.model.name
        data = Stage("data", lambda ctx: self._data(ctx, cfg), {"u2s": data_settings})
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
        tok = load_tokenizer(cfg.train.model.name, need_chat=False)

        def count(s: str) -> int:
            return len(tok(s, add_special_tokens=False)["input_ids"])

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
        from fedloom.generation import build_generator, run_complete

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
        rep = run_complete(gen, items, p.generation, ctx.folder / "generations.jsonl")
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
        )
        return write_stage_report(ctx, table)
