"""The KnowledgeSG pipeline: writers, syntheses, refinement, models, per seed; the pooled table."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, replace
from functools import partial
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.experiment.evaluate import ItemScores, Scorer, heldout_vs_base, suite_vs_base
from fedloom.experiment.guards import require_none
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.generation import GenerationConfig, GeneratorConfig, read_job
from fedloom.judges import JudgeModel, run_judge
from fedloom.judges.validate import validity_note
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.synth.common import (
    cut_words,
    read_jsonl,
    write_jsonl,
)
from fedloom.synth.knowledgesg import refine
from fedloom.synth.knowledgesg.config import KSGConfig
from fedloom.synth.knowledgesg.data import build_data
from fedloom.synth.knowledgesg.methods import SynthMethod
from fedloom.synth.knowledgesg.prompts import (
    FAILURES,
    PROMPT_VERSION,
    writer_prompt,
    writer_target,
)
from fedloom.synth.knowledgesg.quality import canary_leaks, quality
from fedloom.utils import rng_for

# --- the pipeline -----------------------------------------------------------------------------


@register_pipeline
class KnowledgeSG(PipelineMethod):
    name = "knowledgesg"
    config_cls = KSGConfig

    def preflight(self, cfg: PipelineConfig) -> None:
        """The judge answers before any stage runs (a dead endpoint fails in seconds)."""
        if cfg.params.judge is not None and cfg.params.freeform:
            JudgeModel.shared(cfg.params.judge).preflight()

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: KSGConfig = cfg.params
        st = [Stage("data", partial(self._data, cfg=cfg), {"knowledgesg": asdict(p)})]
        for w in p.writers():
            dp = asdict(p.dp) if w == "dp" else None
            st.append(Stage(f"writer-{w}", partial(self._writer, cfg=cfg, which=w), {"dp": dp}))
        for m in p.method_rows():
            settings = asdict(m) | {"examples": p.examples_of(m), "leaky": p.leaky(m)}
            if m.writer is not None:
                st.append(Stage(f"{m.name}.write", partial(self._write, cfg=cfg, m=m), settings))
                prof = asdict(p.professional) if m.answers == "professional" else None
                refine = {"professional": prof, "min_rating": p.min_rating}
                st.append(Stage(f"{m.name}.refine", partial(self._refine, cfg=cfg, m=m), refine))
            st.append(Stage(f"{m.name}.train", partial(self._train, cfg=cfg, m=m), {}))
            st.append(Stage(f"{m.name}.evaluate", partial(self._evaluate, cfg=cfg, m=m), {}))
        return st

    # -- stage bodies --

    def _data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        # pairs must fit the training sequence (~1.3 tokens a word, plus the template)
        max_words = int((cfg.train.data.max_seq_len - 40) / 1.4)
        summary = build_data(cfg.params, cfg.seed, max_words, ctx.folder)
        ctx.console.print(summary)
        return summary

    def _run(
        self, ctx: StageContext, cfg: PipelineConfig, sources: list[dict[str, Any]], dp: bool
    ) -> dict[str, Any]:
        """Train with ``cfg.train`` on ``sources`` (held-out pairs as the eval set) in
        ``ctx.folder/run``; resumes a cut-off run."""
        p: KSGConfig = cfg.params
        heldout = heldout_source(ctx.folder_of("data") / "heldout.jsonl", "heldout")
        overrides: dict[str, Any] = {
            "federation": {"sample_clients": len(sources)},
            "eval": {"max_examples": p.heldout},
        }
        if dp:
            overrides["privacy"] = {"client_dp": asdict(p.dp)}
        res = train_run(
            cfg.train,
            ctx.folder / "run",
            [*sources, heldout],
            ctx.console,
            num_clients=len(sources),
            overrides=overrides,
        )
        return res.summary

    def _writer(self, ctx: StageContext, cfg: PipelineConfig, which: str) -> dict[str, Any]:
        p: KSGConfig = cfg.params
        rows = read_jsonl(ctx.folder_of("data") / "private.jsonl")
        by_client = [
            [
                {"instruction": writer_prompt([], "pair"), "input": ""}
                | {"response": writer_target(r["instruction"], r["response"])}
                for r in rows
                if r["client"] == c
            ]
            for c in range(p.num_clients)
        ]
        sources = client_sources(ctx.folder, by_client)
        summary = self._run(ctx, cfg, sources, dp=which == "dp")
        privacy = summary.get("privacy") or {}
        return {
            "dp": which == "dp",
            "examples": len(rows),
            "epsilon_by_client": privacy.get("epsilon_by_client"),
            "delta": asdict(p.dp).get("delta") or f"1/n ({len(rows) // p.num_clients} per client)",
            "train_seconds": summary.get("train_seconds"),
        }

    def _writer_model(self, ctx: StageContext, cfg: PipelineConfig, writer: str) -> Any:
        """The base model as a generator, or with a writer adapter loaded (bf16 weights where
        native), from the one factory."""
        from fedloom.generation import build_generator

        adapter = None
        if writer != "base":
            adapter = str(ctx.folder_of(f"writer-{writer}") / "run" / "adapter")
        m = cfg.train.model
        gcfg = GeneratorConfig(
            model=m.name, device=m.device, adapter=adapter, name=f"{writer}-writer"
        )
        return build_generator(gcfg)

    def _write(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        from fedloom.generation import run_complete

        p: KSGConfig = cfg.params
        data = ctx.folder_of("data")
        mode = p.examples_of(m)
        pool = {
            "public": read_jsonl(data / "public.jsonl"),
            "private": read_jsonl(data / "private.jsonl"),
            "none": [],
        }[mode]
        ask = "pair" if m.answers == "writer" else "instruction"
        items, shown = [], {}
        for i in range(p.synthetic):
            rng = rng_for(cfg.seed, "ksg-examples", m.name, i)
            ex = rng.sample(pool, p.k) if pool else []
            pid = f"{m.name}-{i}"
            items.append((pid, writer_prompt(ex, m.show, p.example_words, ask)))
            shown[pid] = [e["id"] for e in ex]
        if not p.leaky(m):  # the faithful modes send no private text: assert on the prompts
            private = read_jsonl(data / "private.jsonl")
            texts = {cut_words(r["instruction"], p.example_words) for r in private}
            texts |= {cut_words(r["response"], p.example_words) for r in private}
            leaked = [pid for pid, prompt in items if any(t in prompt for t in texts)]
            require_none(leaked, f"{m.name}: private text in the writer prompts (faithful mode)")
        (ctx.folder / "shown.json").write_text(json.dumps(shown))
        gen = self._writer_model(ctx, cfg, str(m.writer))
        gcfg = replace(p.generation, seed=cfg.seed)
        if ask == "instruction":  # a question needs far fewer tokens than a pair
            gcfg = replace(gcfg, max_new_tokens=min(gcfg.max_new_tokens, p.instruction_tokens))
        rep = run_complete(gen, items, gcfg, ctx.folder / "generations.jsonl")
        return {
            "prompts": len(items),
            "examples": mode,
            "leaky": p.leaky(m),
            "generated": rep.generated,
            "failed": rep.failed,
            "tokens": rep.tokens,
            "tokens_per_second": round(rep.tokens_per_second, 2),
            "writer": gen.name,
            "prompt_version": PROMPT_VERSION,
        }

    def _refine(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        """The writer's outputs read back, filtered (KnowledgeSG: the professional's rating),
        answered; every output left out counted by reason."""
        from fedloom.generation import build_generator

        p: KSGConfig = cfg.params
        data, write = ctx.folder_of("data"), ctx.folder_of(f"{m.name}.write")
        private_rows = read_jsonl(data / "private.jsonl")
        by_id = {x["id"]: x for x in read_jsonl(data / "public.jsonl") + private_rows}
        shown = json.loads((write / "shown.json").read_text())
        fail: Counter[str] = Counter()
        job = read_job(write / "generations.jsonl")
        fail["generation_error"] += len(job.failed)
        cand = refine.candidates(job.ok, m, p, shown, by_id, fail)
        cand = refine.drop_near_duplicates(cand, p, fail)
        parsed_n = len(cand)
        need_prof = m.refine or m.answers == "professional"
        prof = build_generator(p.professional) if need_prof and cand else None
        pro = m.answers == "professional"
        answered_by = p.professional.label() if pro else f"{m.writer}-writer"
        if m.refine and prof is not None:
            cand = refine.rate(prof, cand, p, ctx.folder, fail)
        if m.answers == "self" and cand:
            writer = self._writer_model(ctx, cfg, str(m.writer))
            turns = refine.few_shot(m, shown, by_id, p.example_words)
            cand = refine.answer(writer, cand, turns, p, ctx.folder, fail)
        elif m.answers == "professional" and prof is not None and cand:
            cand = refine.answer(prof, cand, None, p, ctx.folder, fail)
        rows = [
            {"instruction": c["instruction"], "input": "", "response": c["response"]}
            | {"id": c["id"], "method": m.name, "examples": c["examples"], "leaky": p.leaky(m)}
            | {"rating": c.get("rating"), "prompt_version": PROMPT_VERSION}
            for c in cand
        ]
        write_jsonl(ctx.folder / "synthetic.jsonl", rows)
        summary = {
            "prompts": p.synthetic,
            "kept": len(rows),
            "kept_rate": round(len(rows) / p.synthetic, 4),
            "failures": {r: fail.get(r, 0) for r in FAILURES},
            "acceptance_rate": round(len(rows) / parsed_n, 4) if m.refine and parsed_n else None,
            "answered_by": answered_by,
            "leaky": p.leaky(m),
        }
        summary |= quality(rows, private_rows, cfg.seed)
        canaries = json.loads((data / "canaries.json").read_text())
        texts = [f"{r['instruction']} {r['response']}" for r in rows]
        summary["canaries_in_synthetic"] = canary_leaks(texts, canaries)
        ctx.console.print(summary)
        return summary

    def _train(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        p: KSGConfig = cfg.params
        if m.writer is None:
            rows = read_jsonl(ctx.folder_of("data") / "private.jsonl")
        else:
            rows = read_jsonl(ctx.folder_of(f"{m.name}.refine") / "synthetic.jsonl")
        if not rows:  # a result, not a crash: the row says so and the table goes on
            why = (
                f"{m.name}: no synthetic pair survived refinement (see its refine stage's "
                "failures); raise `knowledgesg.synthetic` or lower `knowledgesg.min_rating`"
            )
            ctx.console.print(f"[yellow]{why}[/yellow]")
            return {"pairs": 0, "skipped": why, "private_pairs_seen": 0}
        path = ctx.folder / "train.jsonl"
        write_jsonl(path, [{k: r[k] for k in ("instruction", "input", "response")} for r in rows])
        # the server trains the final model on the (synthetic) set: one party, no DP
        summary = self._run(ctx, cfg, [{"name": "local", "path": str(path), "heldout": 0}], False)
        return {
            "pairs": len(rows),
            "base_eval_loss": summary.get("base_eval_loss"),
            "final_eval_loss": summary.get("final_eval_loss"),
            "train_seconds": summary.get("train_seconds"),
            "private_pairs_seen": p.private if m.writer is None else 0,
        }

    def _evaluate(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        p: KSGConfig = cfg.params
        trained = ctx.summary_of(f"{m.name}.train")
        if trained.get("pairs") == 0:
            return {"skipped": trained.get("skipped", "no training pairs")}
        # checked before the first stage by the pipeline's preflight
        judge = JudgeModel.shared(p.judge) if p.judge and p.freeform else None
        data = ctx.folder_of("data")
        max_len = cfg.train.data.max_seq_len
        adapter = ctx.folder_of(f"{m.name}.train") / "run" / "adapter"
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
        held = read_jsonl(data / "heldout.jsonl")
        recs = [InstructionRecord(r["instruction"], r["response"]) for r in held]
        out: dict[str, Any] = {
            "heldout_loss": heldout_vs_base(
                scorer, adapter, recs, max_len, ctx.folder, "heldout", cfg.seed
            )
        }
        if p.suite:
            used = {tuple(k) for k in json.loads((data / "used_keys.json").read_text())}
            mine = {k for k in used if k[0] == p.suite}
            out["suite"] = suite_vs_base(
                scorer, adapter, p.suite, p.suite_limit, cfg.seed, mine, ctx.folder
            )
        with scorer.model(adapter) as model:
            out |= self._model_checks(ctx, cfg, model, scorer.loaded, held)
        if judge is not None:
            out["freeform"] |= judge_freeform(ctx, judge)
        ctx.console.print({k: v for k, v in out.items() if k != "canaries"})
        return out

    def _model_checks(
        self, ctx: StageContext, cfg: PipelineConfig, model: Any, loaded: Any, held: list[Any]
    ) -> dict[str, Any]:
        """Canary exposure and extraction, and the free-form answers, of one model."""
        from fedloom.privacy.audit import Canary, exposure, extracted

        p: KSGConfig = cfg.params
        data = ctx.folder_of("data")
        tok, dev, max_len = loaded.tokenizer, loaded.device, cfg.train.data.max_seq_len
        out: dict[str, Any] = {}
        canaries = [Canary(**c) for c in json.loads((data / "canaries.json").read_text())]
        per: list[dict[str, Any]] = []
        for c in canaries:
            bits, rank = exposure(model, tok, c, p.exposure_candidates, max_len, dev, cfg.seed)
            per.append({"name": c.name, "exposure": round(bits, 3), "rank": rank})
            per[-1]["extracted"] = extracted(model, tok, c, dev)
        out["canaries"] = {
            "exposure_mean": round(sum(x["exposure"] for x in per) / len(per), 3) if per else None,
            "extracted": sum(x["extracted"] for x in per),
            "per_canary": per,
        }
        if p.freeform:
            out["freeform"] = self._freeform(ctx, cfg, model, loaded, held[: p.freeform])
        return out

    def _freeform(
        self, ctx: StageContext, cfg: PipelineConfig, model: Any, loaded: Any, held: list[Any]
    ) -> dict[str, Any]:
        """Greedy answers to held-out questions, saved with their references (judged after the
        model is put away: :func:`judge_freeform`)."""
        from fedloom.generation import LocalGenerator

        p: KSGConfig = cfg.params
        gen = LocalGenerator(model, loaded.tokenizer, loaded.device)
        gcfg = GenerationConfig(max_new_tokens=p.answer_tokens, batch_size=8)
        answers = [g[0].text for g in gen.generate([h["instruction"] for h in held], gcfg)]
        rows = [
            {"id": h["id"], "question": h["instruction"], "reference": h["response"], "answer": a}
            for h, a in zip(held, answers, strict=True)
        ]
        write_jsonl(ctx.folder / "freeform.jsonl", rows)
        return {"answered": len(rows), "judge": None}

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.synth.knowledgesg.report import write_table

        return write_table(ctx, cfg)


def judge_freeform(ctx: StageContext, judge: JudgeModel) -> dict[str, Any]:
    """The free-form answers rated 1-10 against their references (the papers' reference-guided
    GPT-4 rating), per item in ``items/freeform.json``; unjudged answers counted, not scored."""
    rows = read_jsonl(ctx.folder / "freeform.jsonl")
    items = [
        (
            str(r["id"]),
            {"question": r["question"], "answer": r["answer"], "reference": r["reference"]},
        )
        for r in rows
    ]
    judged = run_judge("reference", judge, items, ctx.folder / "judge.freeform.jsonl")
    ItemScores("free-form rating (judge, 1-10)", False, judged.values).save(
        ctx.folder / "items" / "freeform.json"
    )
    note = validity_note(judge.label, "reference")
    ctx.console.print(f"free-form answers: {judged.line()}; {note}")
    return judged.summary() | {"validity": note}
