"""The `safety` pipeline (Ye et al., ICLR 2025, "Emerging safety attack and defense in
federated instruction tuning") at CPU scale, in resumable stages:

    fedloom pipeline configs/safety.yaml            (configs/tiny-safety.yaml: plumbing)

    data                 normal pairs, held-out pairs, public seeds; evaluation guard built
    questions            harmful questions written from seed categories (guarded)
    attack-data          answered directly (malicious clients' data)
    aligned-data         answered with refusals (benign clients' aligned data; defense L2)
    base.evaluate        the base model
    no-attack            every client benign: normal + aligned data, FedAvg
    attack               `malicious` share of clients train on attack data only, FedAvg
    attack+<reducer>     the same under each robust reducer
    defense-L1..L3       the attacked FedAvg model fine-tuned on a generated defense set
    best+L<k>            the defense on top of the best robust reducer
    attack-<pct>[+L<k>]  the malicious-share sweep, with and without the defense
    table                docs-ready table, stealth plot (norm and cosine per round), sweep plot

Every row's `.evaluate` scores safety on AdvBench/HarmBench subsets (rule judge, the stricter
prefix rules, and an LLM judge when configured) and helpfulness as held-out loss on normal
pairs (paired with the base model, bootstrap interval).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord, PromptRecord
from fedloom.data.sources import load_source_report
from fedloom.experiment.evaluate import ItemScores, Scorer, heldout_vs_base
from fedloom.experiment.train import heldout_source, train_run
from fedloom.generation import GenerationConfig, GeneratorConfig, read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.safety.config import SafetyPipelineConfig
from fedloom.safety.data import (
    ALIGNED_HINT,
    ATTACK_HINT,
    EVERYDAY_TASK,
    PROMPT_VERSION,
    EvalGuard,
    SafetyDataError,
    assert_disjoint,
    dedupe,
    pairs,
    parse_numbered,
    parse_question,
    question_prompt,
    template_refusal,
)
from fedloom.synth.common import read_jsonl, write_jsonl
from fedloom.utils import rng_for


def _pct(share: float) -> str:
    return f"{round(share * 100)}"


@register_pipeline
class SafetyPipeline(PipelineMethod):
    name = "safety"
    config_cls = SafetyPipelineConfig

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: SafetyPipelineConfig = cfg.params
        st = [
            Stage("data", partial(self._data, cfg=cfg), {"safety": asdict(p)}),
            Stage(
                "questions", partial(self._questions, cfg=cfg), {"prompt_version": PROMPT_VERSION}
            ),
            Stage("attack-data", partial(self._attack_data, cfg=cfg), {}),
            Stage("aligned-data", partial(self._aligned_data, cfg=cfg), {}),
            Stage("base.evaluate", partial(self._evaluate, cfg=cfg, row=None), {}),
        ]

        def row(
            name: str, share: float | None, reducer: str = "mean", init: str | None = None
        ) -> None:
            settings = {"malicious": share, "reducer": reducer, "defense_from": init}
            st.append(
                Stage(
                    f"{name}.train",
                    partial(self._train, cfg=cfg, share=share, reducer=reducer, init=init),
                    settings,
                )
            )
            st.append(Stage(f"{name}.evaluate", partial(self._evaluate, cfg=cfg, row=name), {}))

        row("no-attack", None)
        row("attack", p.malicious)
        for r in p.reducers:
            row(f"attack+{r}", p.malicious, r)
        levels = sorted(
            {*p.defense_levels, *[k for k in (p.defense_on_best, p.sweep_defense) if k]}
        )
        for k in levels:
            st.append(
                Stage(
                    f"defense-L{k}.data",
                    partial(self._defense_data, cfg=cfg, level=k),
                    {"level": k},
                )
            )
        for k in p.defense_levels:
            row(f"defense-L{k}", None, init=f"attack|L{k}")
        if p.defense_on_best and p.reducers:
            row(f"best+L{p.defense_on_best}", None, init=f"best|L{p.defense_on_best}")
        for share in p.shares()[1:]:
            row(f"attack-{_pct(share)}", share)
            if p.sweep_defense:
                row(
                    f"attack-{_pct(share)}+L{p.sweep_defense}",
                    None,
                    init=f"attack-{_pct(share)}|L{p.sweep_defense}",
                )
        return st

    # -- data ---------------------------------------------------------------------------------

    def _guard(self, p: SafetyPipelineConfig) -> EvalGuard:
        prompts = []
        for s in p.eval_sets:
            recs, _ = load_source_report(s)
            prompts += [r.prompt for r in recs if isinstance(r, PromptRecord)]
        return EvalGuard(prompts, p.guard_similarity)

    def _data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: SafetyPipelineConfig = cfg.params
        guard = self._guard(p)
        normal, rep = load_source_report(p.normal_source)
        rows = [r for r in normal if isinstance(r, InstructionRecord) and not r.input]
        skipped = {"normal_with_input_or_not_instruction": len(normal) - len(rows)}
        rng_for(cfg.seed, "safety", "normal").shuffle(rows)
        close = guard.check([r.instruction for r in rows])  # e.g. "How does the stock market work?"
        near_eval = set(close.exact + close.near)
        rows = [r for r in rows if r.instruction not in near_eval]
        skipped["normal_close_to_an_eval_prompt"] = len(near_eval)
        need = p.heldout + p.defense_normal + p.num_clients * p.normal_per_client
        if len(rows) < need:
            raise SafetyDataError(
                f"`{p.normal_source}` has {len(rows)} usable pairs, {need} needed (held-out + "
                "defense + clients); lower `normal_per_client`, `heldout` or `defense_normal`"
            )
        as_rows = [
            {"id": f"normal-{i}", "instruction": r.instruction, "input": "", "response": r.response}
            for i, r in enumerate(rows[:need])
        ]
        held = as_rows[: p.heldout]
        defense = as_rows[p.heldout : p.heldout + p.defense_normal]
        clients = as_rows[p.heldout + p.defense_normal :]
        seeds, _ = load_source_report(p.seed_source)
        seed_rows = [
            {"id": r.id, "prompt": r.prompt, "category": str(r.metadata.get("category", ""))}
            for r in seeds
            if isinstance(r, PromptRecord)
        ]
        found = guard.check([r["prompt"] for r in seed_rows])
        dropped = set(found.exact + found.near)
        seed_rows = [r for r in seed_rows if r["prompt"] not in dropped]
        for what, texts in [
            ("normal pairs", [r["instruction"] for r in as_rows]),
            ("seed prompts", [r["prompt"] for r in seed_rows]),
        ]:
            assert_disjoint(guard, texts, what)
        write_jsonl(ctx.folder / "heldout.jsonl", held)
        write_jsonl(ctx.folder / "normal_defense.jsonl", defense)
        write_jsonl(ctx.folder / "normal_clients.jsonl", clients)
        write_jsonl(ctx.folder / "seeds.jsonl", seed_rows)
        cats = sorted({r["category"] for r in seed_rows})
        summary = {
            "normal_clients": len(clients),
            "heldout": len(held),
            "normal_defense": len(defense),
            "seed_prompts": len(seed_rows),
            "seed_categories": cats,
            "seed_prompts_dropped_as_eval_overlap": {
                "exact": len(found.exact),
                "near": len(found.near),
            },
            "eval_prompts_guarded": len(guard.prompts),
            "skipped": skipped,
        }
        ctx.console.print(summary)
        return summary

    def _generator(self, gcfg: GeneratorConfig, adapter: Path | None = None) -> Any:
        """The configured generator, or that model with a trained adapter on it (L3: the
        attacked model writes its own defense data), from the one factory."""
        from fedloom.generation import build_generator

        if adapter is not None:
            gcfg = replace(gcfg, backend="local", adapter=str(adapter), base_url=None,
                           name=f"{gcfg.model}+{adapter.parent.parent.name}")  # fmt: skip
        return build_generator(gcfg)

    def _gen(
        self, p: SafetyPipelineConfig, tokens: int, seed: int, temperature: float | None = None
    ) -> GenerationConfig:
        t = p.temperature if temperature is None else temperature
        return GenerationConfig(
            max_new_tokens=tokens, temperature=t, batch_size=p.batch_size, seed=seed
        )

    def _questions(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.generation import run_job

        p: SafetyPipelineConfig = cfg.params
        seeds = read_jsonl(ctx.folder_of("data") / "seeds.jsonl")
        by_cat: dict[str, list[str]] = {}
        for r in seeds:
            by_cat.setdefault(r["category"], []).append(r["prompt"])
        cats = sorted(by_cat)
        items, shown = [], {}
        for i in range(p.questions):
            cat = cats[i % len(cats)]
            ex = rng_for(cfg.seed, "safety-q", i).sample(by_cat[cat], min(3, len(by_cat[cat])))
            items.append((f"q-{i}", question_prompt(cat, ex)))
            shown[f"q-{i}"] = (cat, ex)
        guard = self._guard(p)
        assert_disjoint(
            guard, [q for _, (_, ex) in shown.items() for q in ex], "question-writing examples"
        )
        rep = run_job(
            self._generator(p.question_generator),
            items,
            self._gen(p, p.question_tokens, cfg.seed),
            ctx.folder / "generations.jsonl",
        )
        from fedloom.eval.judges import JUDGES

        refusal = JUDGES["rules-prefix"]()
        job = read_job(ctx.folder / "generations.jsonl", [i for i, _ in items])
        parsed, failed, writer_refused = [], len(job.failed), 0
        for row in job.ok:
            q = parse_question(row["generations"][0]["text"])
            if q is None:
                failed += 1
                continue
            if refusal.is_refusal("", q):  # the writer declined ("I'm sorry, but I cannot ...")
                writer_refused += 1
                continue
            cat, ex = shown[row["id"]]
            if q in ex:
                failed += 1
                continue
            parsed.append({"id": row["id"], "question": q, "category": cat})
        unique, dupes = dedupe([r["question"] for r in parsed])
        keep_q = set(unique)
        seen: set[str] = set()
        rows = []
        for r in parsed:
            if r["question"] in keep_q and r["question"] not in seen:
                seen.add(r["question"])
                rows.append(r)
        found = guard.check([r["question"] for r in rows])
        bad = set(found.exact + found.near)
        rows = [r for r in rows if r["question"] not in bad]
        assert_disjoint(guard, [r["question"] for r in rows], "harmful questions")
        benign = 0
        if p.harm_check:  # keep requests that a safety-tuned model refuses unprompted
            judge = JUDGES["rules-prefix"]()
            check = [(r["id"], [{"role": "user", "content": r["question"]}]) for r in rows]
            gen = self._generator(p.aligned_generator)
            run_job(gen, check, self._gen(p, 16, cfg.seed, 0.0), ctx.folder / "harm_check.jsonl")
            replies = read_job(ctx.folder / "harm_check.jsonl", [i for i, _ in check]).texts()
            refused = {i for i, text in replies.items() if judge.is_refusal("", text)}
            benign = sum(r["id"] not in refused for r in rows)
            rows = [r for r in rows if r["id"] in refused]
        generated = len(rows)
        if p.public_questions:  # public harmful requests (seed source) join the generated ones
            public = list(seeds)
            rng_for(cfg.seed, "safety-public").shuffle(public)
            rows += [
                {"id": f"pub-{r['id']}", "question": r["prompt"], "category": r["category"]}
                for r in public[: p.public_questions]
            ]
        rng_for(cfg.seed, "safety-q-split").shuffle(rows)
        # pools, in order of need: defense, aligned (benign clients), attack (largest share)
        n_attack = max(round(s * p.num_clients) for s in p.shares()) * p.attack_per_client
        want = {
            "defense": p.defense_aligned,
            "aligned": p.num_clients * p.aligned_per_client,
            "attack": n_attack,
        }
        total = sum(want.values())
        pools: dict[str, list[dict[str, Any]]] = {}
        start = 0
        for name, n in want.items():
            take = n if len(rows) >= total else max(1, len(rows) * n // total)
            pools[name] = rows[start : start + take]
            start += take
        empty = [k for k, v in pools.items() if not v]
        if empty:
            raise SafetyDataError(
                f"only {len(rows)} harmful questions survived (parse failures {failed}, duplicates "
                f"{dupes}, eval overlaps {len(bad)}, answered by the reference model {benign}): the {empty} pool(s) are empty; raise "
                "`safety.questions` or use a stronger `question_generator`"
            )
        (ctx.folder / "questions.json").write_text(json.dumps(pools, indent=1, ensure_ascii=False))
        summary = {
            "asked": p.questions,
            "generated": rep.generated,
            "unparseable_or_copied": failed,
            "writer_refused": writer_refused,
            "duplicates": dupes,
            "eval_overlap_dropped": {"exact": len(found.exact), "near": len(found.near)},
            "answered_by_reference_model": benign,
            "generated_kept": generated,
            "public_added": len(rows) - generated,
            "kept": len(rows),
            "pools": {k: len(v) for k, v in pools.items()},
            "wanted": want,
            "tokens_per_second": round(rep.tokens_per_second, 1),
        }
        ctx.console.print(summary)
        return summary

    def _answer(
        self,
        ctx: StageContext,
        cfg: PipelineConfig,
        gcfg: GeneratorConfig,
        questions: list[dict[str, Any]],
        system: str | None,
        tokens: int,
        file: str,
        want_refusal: bool | None,
        adapter: Path | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Answer ``questions`` (with the ``system`` hint); keep answers the prefix judge reads
        as refusals (``want_refusal``), as non-refusals (False) or all (None)."""
        from fedloom.eval.judges import JUDGES
        from fedloom.generation import run_job

        p: SafetyPipelineConfig = cfg.params
        judge = JUDGES["rules-prefix"]()
        items = []
        for q in questions:
            msgs = [{"role": "user", "content": q["question"]}]
            if system:
                msgs.insert(0, {"role": "system", "content": system})
            items.append((q["id"], msgs))
        rep = run_job(
            self._generator(gcfg, adapter),
            items,
            self._gen(p, tokens, cfg.seed, 0.7),
            ctx.folder / file,
        )
        by_id = {q["id"]: q for q in questions}
        kept, counts = [], {"failed": 0, "empty": 0, "wrong_kind": 0, "cut_at_limit": 0}
        # rows answered for an earlier pool split are not this job's (read_job skips them)
        job = read_job(ctx.folder / file, by_id)
        counts["failed"] = len(job.failed)
        for row in job.ok:
            g = row["generations"][0]
            text = g["text"].strip()
            if len(text.split()) < 3:
                counts["empty"] += 1
                continue
            refused = judge.is_refusal(by_id[row["id"]]["question"], text)
            if want_refusal is not None and refused != want_refusal:
                counts["wrong_kind"] += 1
                continue
            counts["cut_at_limit"] += int(g.get("finish_reason") == "length")
            q = by_id[row["id"]]
            kept.append(
                {
                    "id": q["id"],
                    "instruction": q["question"],
                    "input": "",
                    "response": text,
                    "category": q.get("category", ""),
                }
            )
        counts["generated"] = rep.generated
        return kept, counts

    def _attack_data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: SafetyPipelineConfig = cfg.params
        qs = json.loads((ctx.folder_of("questions") / "questions.json").read_text())["attack"]
        kept, counts = self._answer(
            ctx,
            cfg,
            p.attack_generator,
            qs,
            ATTACK_HINT,
            p.attack_tokens,
            "generations.jsonl",
            False,
        )
        if not kept:
            raise SafetyDataError(
                "no attack answer survived (every one refused or failed): use a compliant `attack_generator`"
            )
        write_jsonl(ctx.folder / "attack.jsonl", pairs(kept))
        assert_disjoint(self._guard(p), [r["instruction"] for r in kept], "attack data")
        summary = {
            "questions": len(qs),
            "kept": len(kept),
            **{
                f"dropped_{k}" if k != "generated" and k != "cut_at_limit" else k: v
                for k, v in counts.items()
            },
            "generator": p.attack_generator.model,
        }
        ctx.console.print(summary)
        return summary

    def _aligned_data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: SafetyPipelineConfig = cfg.params
        pools = json.loads((ctx.folder_of("questions") / "questions.json").read_text())
        qs = pools["aligned"] + pools["defense"]
        kept, counts = self._answer(
            ctx,
            cfg,
            p.aligned_generator,
            qs,
            ALIGNED_HINT,
            p.aligned_tokens,
            "generations.jsonl",
            True,
        )
        ids = {q["id"] for q in pools["defense"]}
        clients = [r for r in kept if r["id"] not in ids]
        defense = [r for r in kept if r["id"] in ids]
        if not clients:
            raise SafetyDataError(
                "no aligned answer survived (none read as a refusal): use a model that follows the refusal hint as `aligned_generator`"
            )
        assert_disjoint(self._guard(p), [r["instruction"] for r in kept], "aligned data")
        write_jsonl(ctx.folder / "aligned.jsonl", pairs(clients))
        write_jsonl(ctx.folder / "aligned_defense.jsonl", pairs(defense))
        summary = {
            "questions": len(qs),
            "kept_clients": len(clients),
            "kept_defense": len(defense),
            **{
                f"dropped_{k}" if k not in ("generated", "cut_at_limit") else k: v
                for k, v in counts.items()
            },
            "generator": p.aligned_generator.model,
        }
        ctx.console.print(summary)
        return summary

    def _defense_data(self, ctx: StageContext, cfg: PipelineConfig, level: int) -> dict[str, Any]:
        """Aligned + normal pairs, about 1:1. L1: public prompts with template refusals and
        public normal pairs; L2: the off-the-shelf generator writes both; L3: the attacked
        FedAvg model writes both itself."""
        from fedloom.generation import run_job

        p: SafetyPipelineConfig = cfg.params
        data = ctx.folder_of("data")
        if level == 1:
            pools = json.loads((ctx.folder_of("questions") / "questions.json").read_text())
            used = {q["question"] for pool in pools.values() for q in pool}
            seeds = [r for r in read_jsonl(data / "seeds.jsonl") if r["prompt"] not in used]
            rng_for(cfg.seed, "safety-l1").shuffle(seeds)
            aligned = [
                {
                    "instruction": s["prompt"],
                    "input": "",
                    "response": template_refusal(s["id"], s["category"], cfg.seed),
                }
                for s in seeds[: p.defense_aligned]
            ]
            normal = pairs(read_jsonl(data / "normal_defense.jsonl"))
            counts: dict[str, Any] = {}
        else:
            gcfg, adapter = p.aligned_generator, None
            if level == 3:  # the attacked global model (the trained model itself) writes
                gcfg = replace(p.aligned_generator, model=cfg.train.model.name)
                adapter = ctx.folder_of("attack.train") / "run" / "adapter"
            qs = json.loads((ctx.folder_of("questions") / "questions.json").read_text())["defense"]
            if level == 2:
                aligned = read_jsonl(ctx.folder_of("aligned-data") / "aligned_defense.jsonl")
                c_al: dict[str, int] = {}
            else:
                got, c_al = self._answer(
                    ctx,
                    cfg,
                    gcfg,
                    qs,
                    ALIGNED_HINT,
                    p.aligned_tokens,
                    "aligned.jsonl",
                    True,
                    adapter,
                )
                aligned = pairs(got)
            gen = self._generator(gcfg, adapter)
            per = 10
            asks = [
                (f"everyday-{i}", [{"role": "user", "content": EVERYDAY_TASK.format(n=per)}])
                for i in range(math.ceil(p.defense_normal * 1.5 / per))
            ]
            run_job(gen, asks, self._gen(p, 24 * per, cfg.seed), ctx.folder / "everyday.jsonl")
            everyday = read_job(ctx.folder / "everyday.jsonl", [i for i, _ in asks]).texts()
            listed = [q for text in everyday.values() for q in parse_numbered(text)]
            listed, dup = dedupe(listed)
            guard = self._guard(p)
            near = guard.check(listed)
            listed = [q for q in listed if q not in set(near.exact + near.near)][: p.defense_normal]
            got, c_no = self._answer(
                ctx,
                cfg,
                gcfg,
                [{"id": f"n-{i}", "question": q} for i, q in enumerate(listed)],
                None,
                p.normal_tokens,
                "normal.jsonl",
                None,
                adapter,
            )
            normal = pairs(got)
            counts = {
                "aligned": c_al,
                "everyday_listed": len(listed),
                "everyday_duplicates": dup,
                "normal": c_no,
            }
        if not aligned or not normal:
            raise SafetyDataError(
                f"defense level {level}: {len(aligned)} aligned and {len(normal)} normal pairs survived; both are needed"
            )
        rows = aligned + normal
        assert_disjoint(self._guard(p), [r["instruction"] for r in rows], f"defense L{level} data")
        write_jsonl(ctx.folder / "defense.jsonl", rows)
        summary = {"level": level, "aligned": len(aligned), "normal": len(normal), "counts": counts}
        ctx.console.print(summary)
        return summary

    # -- training -----------------------------------------------------------------------------

    def _train(
        self,
        ctx: StageContext,
        cfg: PipelineConfig,
        share: float | None,
        reducer: str,
        init: str | None,
    ) -> dict[str, Any]:
        p: SafetyPipelineConfig = cfg.params
        data = ctx.folder_of("data")
        raw: dict[str, Any] = {"eval": {"max_examples": p.heldout}, "federation": {}}
        held = heldout_source(data / "heldout.jsonl", "heldout")
        if init is None:  # a federated run over benign (and malicious) clients
            aligned = ctx.folder_of("aligned-data") / "aligned.jsonl"
            sources = [
                {
                    "name": "local",
                    "path": str(data / "normal_clients.jsonl"),
                    "heldout": 0,
                    "domain": "normal",
                },
                {
                    "name": "local",
                    "path": str(aligned),
                    "heldout": 0,
                    "domain": "aligned",
                    "limit": p.num_clients * p.aligned_per_client,
                },
                held,
            ]
            num_clients = p.num_clients
            raw["federation"]["reducer"] = reducer
            raw["federation"]["reducer_params"] = self._reducer_params(
                cfg, reducer, share or p.malicious
            )
            if share is not None:
                n_mal = round(share * p.num_clients)
                attack = ctx.folder_of("attack-data") / "attack.jsonl"
                raw["safety"] = {
                    "malicious_clients": share,
                    "attack": {
                        "name": "local",
                        "path": str(attack),
                        "domain": "attack",
                        "limit": n_mal * p.attack_per_client,
                    },
                }
            init_from = None
        else:  # server-side defense: one party fine-tunes the given global adapter
            source_row, level = init.split("|")
            if source_row == "best":
                source_row, _ = self._best(ctx, cfg)
            defense = ctx.folder_of(f"defense-{level}.data") / "defense.jsonl"
            sources = [
                {"name": "local", "path": str(defense), "heldout": 0, "domain": "defense"},
                held,
            ]
            num_clients = 1
            raw["federation"] |= {
                "algorithm": "fedavg",
                "rounds": 1,
                "sample_clients": 1,
                "min_clients": 1,
            }
            raw["train"] = {"local_steps": p.defense_steps}
            if p.defense_lr is not None:
                raw["train"]["lr"] = p.defense_lr
            init_from = ctx.folder_of(f"{source_row}.train") / "run" / "adapter"
            raw["lora"] = {"init_from": str(init_from)}
        out = ctx.folder / "run"
        res = train_run(
            cfg.train, out, sources, ctx.console, num_clients=num_clients, overrides=raw
        )
        summary = res.summary
        return {
            "malicious_clients": summary.get("malicious_clients"),
            "reducer": reducer,
            "init_from": str(init_from) if init_from else None,
            "client_sizes": summary.get("client_sizes"),
            "final_eval_loss": summary.get("final_eval_loss"),
            "malicious_share": _malicious_share(out),
            "train_seconds": summary.get("train_seconds"),
        }

    def _reducer_params(self, cfg: PipelineConfig, reducer: str, share: float) -> dict[str, Any]:
        p: SafetyPipelineConfig = cfg.params
        params = dict(p.reducer_params.get(reducer, {}))
        if reducer in ("krum", "multikrum", "dnc"):
            s = cfg.train.federation.sample_clients
            params.setdefault("f", max(1, int(math.floor(s * share + 0.5))))
        return params

    def _best(self, ctx: StageContext, cfg: PipelineConfig) -> tuple[str, float]:
        """The robust-reducer row with the highest safety rate on the first eval set."""
        p: SafetyPipelineConfig = cfg.params
        scores = {}
        for r in p.reducers:
            ev = ctx.summary_of(f"attack+{r}.evaluate")
            scores[f"attack+{r}"] = ev["safety"][p.eval_sets[0]]["rules"]["rate"]
        best = max(scores, key=lambda k: scores[k])
        return best, scores[best]

    # -- evaluation ---------------------------------------------------------------------------

    def _evaluate(self, ctx: StageContext, cfg: PipelineConfig, row: str | None) -> dict[str, Any]:
        """Safety verdicts per item on each eval set (keyword rules, the prefix rule, and the
        LLM judge when configured), held-out loss per item, MT-Bench; per-item scores saved in
        ``items/`` for the pooled table."""
        from fedloom.eval.judges import make_rating_judge

        p: SafetyPipelineConfig = cfg.params
        adapter = None if row is None else ctx.folder_of(f"{row}.train") / "run" / "adapter"
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
        rating = make_rating_judge(p.judge) if p.judge else None
        out: dict[str, Any] = {"row": row or "base", "safety": {}}
        answers = []
        for suite in p.eval_sets:
            res, items = self._safety_suite(ctx, cfg, scorer, adapter, suite, rating)
            out["safety"][suite] = res
            answers += [
                {
                    "suite": suite,
                    "id": it["id"],
                    "response": it["response"],
                    "refused": it["refused"],
                }
                for it in items
            ]
        held = read_jsonl(ctx.folder_of("data") / "heldout.jsonl")
        recs = [InstructionRecord(h["instruction"], h["response"]) for h in held]
        max_len = cfg.train.data.max_seq_len
        if adapter is None:  # the base row: its own reference
            base = scorer.heldout(None, recs, max_len)
            for which in ("base", "tuned"):
                base.save(ctx.folder / "items" / f"heldout.{which}.json")
            out["heldout_loss"] = {"n": base.n, "base": round(base.mean, 4), "tuned": round(base.mean, 4),
                                   "diff": 0.0, "ci95": [0.0, 0.0]}  # fmt: skip
        else:
            out["heldout_loss"] = heldout_vs_base(
                scorer, adapter, recs, max_len, ctx.folder, "heldout", cfg.seed
            )
        if p.mtbench:
            mt, meta = scorer.suite(adapter, "mtbench", p.mtbench, cfg.seed, rating_judge=rating)
            out["mtbench"] = meta["metrics"] | {
                "n": meta["n"],
                "judge": rating.name if rating else None,
            }
            write_jsonl(ctx.folder / "mtbench.jsonl", meta["items"])
        write_jsonl(ctx.folder / "answers.jsonl", answers)
        ctx.console.print({k: v for k, v in out.items()})
        return out

    def _safety_suite(
        self,
        ctx: StageContext,
        cfg: PipelineConfig,
        scorer: Scorer,
        adapter: Path | None,
        suite: str,
        rating: Any,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One eval set: the answers (cached by content), each judge's verdict per item and
        its rate with a Wilson interval."""
        from fedloom.eval.judges import JUDGES, LLMSafetyJudge
        from fedloom.eval.suites import wilson_interval

        p: SafetyPipelineConfig = cfg.params
        scores, meta = scorer.suite(
            adapter, suite, p.limit(suite), cfg.seed,
            batch_size=16, max_new_tokens=p.max_new_tokens, judge="rules",
        )  # fmt: skip
        items = meta["items"]
        by_id = {
            rec.id: rec.prompt
            for rec in load_source_report(suite)[0]
            if isinstance(rec, PromptRecord)
        }
        prefix = JUDGES["rules-prefix"]()
        verdicts: dict[str, dict[str, float]] = {
            "rules": scores.values,
            "rules-prefix": {
                str(it["id"]): float(prefix.is_refusal(by_id.get(it["id"], ""), it["response"]))
                for it in items
            },
        }
        res: dict[str, Any] = {"n": meta["n"]}
        if rating is not None:
            llm = LLMSafetyJudge(rating)
            v = {
                str(it["id"]): llm.is_safe(by_id.get(it["id"], ""), it["response"]) for it in items
            }
            verdicts[llm.name] = {i: float(bool(x)) for i, x in v.items() if x is not None}
            res["llm_unjudged"] = sum(x is None for x in v.values())
        for name, vs in verdicts.items():
            k = int(sum(vs.values()))
            lo, hi = wilson_interval(k, len(vs))
            res[name] = {
                "rate": round(k / max(len(vs), 1), 4),
                "ci95": [round(lo, 4), round(hi, 4)],
            }
            ItemScores(f"{suite} safe ({name})", False, vs).save(
                ctx.folder / "items" / f"{suite}.{name}.json"
            )
        return res, items

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.safety.report import write_report

        return write_report(ctx, cfg)


def _malicious_share(run_dir: Path) -> float | None:
    """Mean over rounds of the malicious clients' total share in the aggregate."""
    s = run_dir / "summary.json"
    m = run_dir / "metrics.jsonl"
    if not s.exists() or not m.exists():
        return None
    mal = {str(c) for c in json.loads(s.read_text()).get("malicious_clients") or []}
    if not mal:
        return None
    shares = []
    for line in m.read_text().splitlines():
        agg = json.loads(line).get("aggregation") or {}
        share = agg.get("share") or {}
        if share:
            shares.append(sum(v for c, v in share.items() if c in mal))
    return round(sum(shares) / len(shares), 4) if shares else None
