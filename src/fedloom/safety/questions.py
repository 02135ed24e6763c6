"""The data and questions stages: normal pairs and public seeds; harmful requests written, parsed,
guarded, harm-checked and split into disjoint pools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord, PromptRecord
from fedloom.data.sources import load_source_report
from fedloom.generation import read_job, run_complete
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.safety.config import SafetyPipelineConfig
from fedloom.safety.data import (
    SafetyDataError,
    assert_disjoint,
    dedupe,
    parse_question,
    question_prompt,
)
from fedloom.safety.generators import eval_guard, gen_config, generator
from fedloom.synth.common import read_jsonl, write_jsonl
from fedloom.utils import rng_for


def data_stage(ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
    p: SafetyPipelineConfig = cfg.params
    guard = eval_guard(p)
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


def question_items(
    seeds: list[dict[str, Any]], n: int, seed: int
) -> tuple[list[tuple[str, str]], dict[str, tuple[str, list[str]]]]:
    """`n` question-writing prompts, round-robin over the seed categories, each showing 3 seed
    requests of its category; returns the (id, prompt) items and what each one showed."""
    by_cat: dict[str, list[str]] = {}
    for r in seeds:
        by_cat.setdefault(r["category"], []).append(r["prompt"])
    cats = sorted(by_cat)
    items, shown = [], {}
    for i in range(n):
        cat = cats[i % len(cats)]
        ex = rng_for(seed, "safety-q", i).sample(by_cat[cat], min(3, len(by_cat[cat])))
        items.append((f"q-{i}", question_prompt(cat, ex)))
        shown[f"q-{i}"] = (cat, ex)
    return items, shown


def parse_questions(
    rows: list[dict[str, Any]], shown: dict[str, tuple[str, list[str]]]
) -> tuple[list[dict[str, Any]], int, int]:
    """The written requests, parsed; (kept rows, unparseable or copied, the writer's refusals).
    Duplicates are dropped (the first kept)."""
    from fedloom.eval.judges import JUDGES

    refusal = JUDGES["rules-prefix"]()
    parsed, failed, refused = [], 0, 0
    for row in rows:
        q = parse_question(row["generations"][0]["text"])
        cat, ex = shown[row["id"]]
        if q is None or q in ex:
            failed += 1
        elif refusal.is_refusal("", q):  # the writer declined ("I'm sorry, but I cannot ...")
            refused += 1
        else:
            parsed.append({"id": row["id"], "question": q, "category": cat})
    return parsed, failed, refused


def first_of_each(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Rows whose question survives :func:`dedupe` (near-identical ones merged), each once."""
    unique, dupes = dedupe([r["question"] for r in rows])
    keep, seen, out = set(unique), set(), []
    for r in rows:
        if r["question"] in keep and r["question"] not in seen:
            seen.add(r["question"])
            out.append(r)
    return out, dupes


def harm_check(
    rows: list[dict[str, Any]], p: SafetyPipelineConfig, seed: int, folder: Path
) -> tuple[list[dict[str, Any]], int]:
    """Keep the requests a safety-tuned model (the aligned generator) refuses unprompted;
    returns them and how many it answered (dropped)."""
    from fedloom.eval.judges import JUDGES

    judge = JUDGES["rules-prefix"]()
    check = [(r["id"], [{"role": "user", "content": r["question"]}]) for r in rows]
    run_complete(
        generator(p.aligned_generator),
        check,
        gen_config(p, 16, seed, 0.0),
        folder / "harm_check.jsonl",
    )
    replies = read_job(folder / "harm_check.jsonl", [i for i, _ in check]).texts()
    refused = {i for i, text in replies.items() if judge.is_refusal("", text)}
    return [r for r in rows if r["id"] in refused], sum(r["id"] not in refused for r in rows)


def split_pools(
    rows: list[dict[str, Any]], p: SafetyPipelineConfig
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Disjoint pools, in order of need: defense, aligned (benign clients), attack (for the
    largest malicious share); shrunk in proportion when too few requests survived."""
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
    return pools, want


def questions_stage(ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
    """Harmful requests written, parsed, kept off the evaluation prompts, harm-checked, joined by
    public ones, and split into the attack / aligned / defense pools; every drop counted."""
    p: SafetyPipelineConfig = cfg.params
    seeds = read_jsonl(ctx.folder_of("data") / "seeds.jsonl")
    items, shown = question_items(seeds, p.questions, cfg.seed)
    guard = eval_guard(p)
    assert_disjoint(
        guard, [q for _, (_, ex) in shown.items() for q in ex], "question-writing examples"
    )
    rep = run_complete(generator(p.question_generator), items, gen_config(p, p.question_tokens, cfg.seed),
                  ctx.folder / "generations.jsonl")  # fmt: skip
    job = read_job(ctx.folder / "generations.jsonl", [i for i, _ in items])
    parsed, failed, writer_refused = parse_questions(job.ok, shown)
    failed += len(job.failed)
    rows, dupes = first_of_each(parsed)
    found = guard.check([r["question"] for r in rows])
    bad = set(found.exact + found.near)
    rows = [r for r in rows if r["question"] not in bad]
    assert_disjoint(guard, [r["question"] for r in rows], "harmful questions")
    benign = 0
    if p.harm_check:
        rows, benign = harm_check(rows, p, cfg.seed, ctx.folder)
    generated = len(rows)
    if p.public_questions:  # public harmful requests (seed source) join the generated ones
        public = list(seeds)
        rng_for(cfg.seed, "safety-public").shuffle(public)
        rows += [{"id": f"pub-{r['id']}", "question": r["prompt"], "category": r["category"]}
                 for r in public[: p.public_questions]]  # fmt: skip
    rng_for(cfg.seed, "safety-q-split").shuffle(rows)
    pools, want = split_pools(rows, p)
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
