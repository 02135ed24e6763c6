"""The attack, aligned and defense data stages: answers to the pooled requests, kept by kind
(compliant, refusal), and the L1-L3 defense sets."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedloom.generation import GeneratorConfig, read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.safety.config import SafetyPipelineConfig
from fedloom.safety.data import (
    ALIGNED_HINT,
    ATTACK_HINT,
    EVERYDAY_TASK,
    SafetyDataError,
    assert_disjoint,
    dedupe,
    pairs,
    parse_numbered,
    template_refusal,
)
from fedloom.safety.generators import eval_guard, gen_config, generator
from fedloom.synth.common import read_jsonl, write_jsonl
from fedloom.utils import rng_for


def answer(
    ctx: StageContext,
    cfg: PipelineConfig,
    gcfg: GeneratorConfig,
    questions: list[dict[str, Any]],
    system: str | None,
    tokens: int,
    file: str,
    want_refusal: bool | None,
    adapter: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer ``questions`` (with the ``system`` hint); keep the answers that read as
    refusals (``want_refusal`` True: by the configured selection judge, ``select_judge``), as
    non-refusals (False: by the prefix rules) or all (None). Every answer's prefix-rule reading
    is counted either way (``rules_prefix_refusals``)."""
    from fedloom.eval.judges import JUDGES
    from fedloom.generation import run_complete

    p: SafetyPipelineConfig = cfg.params
    judge = JUDGES["rules-prefix"]()
    selector = p.selector() if want_refusal else "rules-prefix"
    items = []
    for q in questions:
        msgs = [{"role": "user", "content": q["question"]}]
        if system:
            msgs.insert(0, {"role": "system", "content": system})
        items.append((q["id"], msgs))
    rep = run_complete(
        generator(gcfg, adapter),
        items,
        gen_config(p, tokens, cfg.seed, 0.7),
        ctx.folder / file,
    )
    by_id = {q["id"]: q for q in questions}
    kept: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"failed": 0, "empty": 0, "wrong_kind": 0, "cut_at_limit": 0}
    counts |= {"rules_prefix_refusals": 0, "unjudged": 0}
    # rows answered for an earlier pool split are not this job's (read_job skips them)
    job = read_job(ctx.folder / file, by_id)
    counts["failed"] = len(job.failed)
    rows = [r for r in job.ok if len(r["generations"][0]["text"].split()) >= 3]
    counts["empty"] = len(job.ok) - len(rows)
    safe = (
        _llm_safe(ctx, p, rows, by_id, file) if want_refusal is not None and selector == "safety"
        else {}
    )  # fmt: skip
    for row in rows:
        g = row["generations"][0]
        text = g["text"].strip()
        by_rules = judge.is_refusal(by_id[row["id"]]["question"], text)
        counts["rules_prefix_refusals"] += int(by_rules)
        if want_refusal is not None and selector != "none":
            if selector == "safety" and row["id"] not in safe:
                counts["unjudged"] += 1
                continue
            refused = safe[row["id"]] if selector == "safety" else by_rules
            if refused != want_refusal:
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
    counts["selected_by"] = selector if want_refusal is not None else "all kept"
    return kept, counts


def _llm_safe(
    ctx: StageContext,
    p: SafetyPipelineConfig,
    rows: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    file: str,
) -> dict[str, bool]:
    """The LLM safety judge's reading of each answer (True: safe); unjudged answers absent."""
    from fedloom.judges import JudgeModel, run_judge

    if p.judge is None:  # the config refuses select_judge: safety without a judge
        raise SafetyDataError("`safety.select_judge: safety` needs `safety.judge`")
    asked = [
        (r["id"], {"request": by_id[r["id"]]["question"], "response": r["generations"][0]["text"]})
        for r in rows
    ]
    judged = run_judge("safety", JudgeModel.shared(p.judge), asked, ctx.folder / f"select.{file}")
    return {k: v >= 0.5 for k, v in judged.values.items()}


def attack_data_stage(ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
    p: SafetyPipelineConfig = cfg.params
    qs = json.loads((ctx.folder_of("questions") / "questions.json").read_text())["attack"]
    kept, counts = answer(
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
    assert_disjoint(eval_guard(p), [r["instruction"] for r in kept], "attack data")
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


def aligned_data_stage(ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
    p: SafetyPipelineConfig = cfg.params
    pools = json.loads((ctx.folder_of("questions") / "questions.json").read_text())
    qs = pools["aligned"] + pools["defense"]
    kept, counts = answer(
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
    assert_disjoint(eval_guard(p), [r["instruction"] for r in kept], "aligned data")
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


def public_defense(
    ctx: StageContext, cfg: PipelineConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """L1: public harmful prompts no pool holds, with template refusals; public normal pairs."""
    p: SafetyPipelineConfig = cfg.params
    data = ctx.folder_of("data")
    pools = json.loads((ctx.folder_of("questions") / "questions.json").read_text())
    used = {q["question"] for pool in pools.values() for q in pool}
    seeds = [r for r in read_jsonl(data / "seeds.jsonl") if r["prompt"] not in used]
    rng_for(cfg.seed, "safety-l1").shuffle(seeds)
    aligned = [
        {"instruction": s["prompt"], "input": "",
         "response": template_refusal(s["id"], s["category"], cfg.seed)}
        for s in seeds[: p.defense_aligned]
    ]  # fmt: skip
    return aligned, pairs(read_jsonl(data / "normal_defense.jsonl"))


def everyday_questions(
    ctx: StageContext, cfg: PipelineConfig, gcfg: GeneratorConfig, adapter: Path | None
) -> tuple[list[str], int]:
    """Everyday questions the generator lists (10 a prompt), de-duplicated, evaluation prompts
    (and near copies) dropped; returns up to `defense_normal` and the duplicates count."""
    from fedloom.generation import run_complete

    p: SafetyPipelineConfig = cfg.params
    per = 10
    asks = [
        (f"everyday-{i}", [{"role": "user", "content": EVERYDAY_TASK.format(n=per)}])
        for i in range(math.ceil(p.defense_normal * 1.5 / per))
    ]
    run_complete(
        generator(gcfg, adapter),
        asks,
        gen_config(p, 24 * per, cfg.seed),
        ctx.folder / "everyday.jsonl",
    )
    everyday = read_job(ctx.folder / "everyday.jsonl", [i for i, _ in asks]).texts()
    listed, dup = dedupe([q for text in everyday.values() for q in parse_numbered(text)])
    near = eval_guard(p).check(listed)
    return [q for q in listed if q not in set(near.exact + near.near)][: p.defense_normal], dup


def written_defense(
    ctx: StageContext, cfg: PipelineConfig, level: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """L2: the off-the-shelf generator's refusals (from the aligned-data stage) and its
    everyday questions and answers; L3: the attacked FedAvg model writes both itself."""
    p: SafetyPipelineConfig = cfg.params
    gcfg, adapter = p.aligned_generator, None
    c_al: dict[str, int] = {}
    if level == 3:  # the attacked global model (the trained model itself) writes
        gcfg = replace(p.aligned_generator, model=cfg.train.model.name)
        adapter = ctx.folder_of("attack.train") / "run" / "adapter"
        qs = json.loads((ctx.folder_of("questions") / "questions.json").read_text())["defense"]
        got, c_al = answer(ctx, cfg, gcfg, qs, ALIGNED_HINT, p.aligned_tokens, "aligned.jsonl",
                           True, adapter)  # fmt: skip
        aligned = pairs(got)
    else:
        aligned = read_jsonl(ctx.folder_of("aligned-data") / "aligned_defense.jsonl")
    listed, dup = everyday_questions(ctx, cfg, gcfg, adapter)
    asked = [{"id": f"n-{i}", "question": q} for i, q in enumerate(listed)]
    got, c_no = answer(ctx, cfg, gcfg, asked, None, p.normal_tokens, "normal.jsonl", None, adapter)
    counts = {
        "aligned": c_al,
        "everyday_listed": len(listed),
        "everyday_duplicates": dup,
        "normal": c_no,
    }
    return aligned, pairs(got), counts


def defense_data_stage(ctx: StageContext, cfg: PipelineConfig, level: int) -> dict[str, Any]:
    """Aligned + normal pairs, about 1:1. L1: public prompts with template refusals and
    public normal pairs; L2: the off-the-shelf generator writes both; L3: the attacked
    FedAvg model writes both itself."""
    p: SafetyPipelineConfig = cfg.params
    counts: dict[str, Any] = {}
    if level == 1:
        aligned, normal = public_defense(ctx, cfg)
    else:
        aligned, normal, counts = written_defense(ctx, cfg, level)
    if not aligned or not normal:
        raise SafetyDataError(
            f"defense level {level}: {len(aligned)} aligned and {len(normal)} normal pairs survived; both are needed"
        )
    rows = aligned + normal
    assert_disjoint(eval_guard(p), [r["instruction"] for r in rows], f"defense L{level} data")
    write_jsonl(ctx.folder / "defense.jsonl", rows)
    summary = {"level": level, "aligned": len(aligned), "normal": len(normal), "counts": counts}
    ctx.console.print(summary)
    return summary
