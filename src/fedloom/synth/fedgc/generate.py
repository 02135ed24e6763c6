"""The generation stage: each client's budget and label allocation, prompts with guidance, a resumable job, rejects by reason."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

from fedloom.generation import read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.synth.common import normalise, read_jsonl, write_jsonl
from fedloom.synth.fedgc.budget import BUDGETS, allocate_labels
from fedloom.synth.fedgc.config import FedGCConfig, Variant
from fedloom.synth.fedgc.guidance import (
    LLM_PROMPT_REQUEST,
    guided_prompt,
    task_prompt,
)
from fedloom.synth.fedgc.rows import _question, parse_generated
from fedloom.utils import rng_for


def generate_stage(
    ctx: StageContext, cfg: PipelineConfig, v: Variant, alpha: float
) -> dict[str, Any]:
    from fedloom.generation import build_generator, run_job

    p: FedGCConfig = cfg.params
    data = ctx.folder_of(f"data-a{alpha}")
    labels: list[str] = ctx.summary_of(f"data-a{alpha}")["labels"]
    private = [read_jsonl(data / f"private_{c}.jsonl") for c in range(p.num_clients)]
    # generated examples are framed exactly as the private ones (the source's prompt)
    first = next(r["instruction"] for rows in private for r in rows)
    frame = first[: len(first) - len(_question(first))]
    budgets = BUDGETS[v.budget](v.total, [len(rows) for rows in private])
    gen = build_generator(p.generator)
    llm_prompts: dict[str, list[str]] = {}
    if v.prompt == "llm":  # the generator writes the task prompts once per label
        asks = [
            (f"p-{lab}-{j}", LLM_PROMPT_REQUEST.format(task_item=p.task_item, label=lab))
            for lab in labels
            for j in range(p.llm_prompts_per_label)
        ]
        run_job(gen, asks, replace(p.generation, seed=cfg.seed), ctx.folder / "llm_prompts.jsonl")
        asked = read_job(ctx.folder / "llm_prompts.jsonl", [i for i, _ in asks])
        for pid, reply in asked.texts().items():
            text = reply.strip().splitlines()
            if text and len(text[0].split()) >= 4:
                llm_prompts.setdefault(pid.split("-")[1], []).append(text[0].strip())
    items: list[tuple[str, str]] = []
    meta: dict[str, dict[str, Any]] = {}
    alloc_all = []
    for c, rows in enumerate(private):
        have = Counter(r["label"] for r in rows)
        alloc = allocate_labels(
            budgets[c], {lab: have.get(lab, 0) for lab in labels}, v.label_allocation
        )
        alloc_all.append(alloc)
        for lab, n in alloc.items():
            mine = [r["instruction"] for r in rows if r["label"] == lab]
            for j in range(n):
                rng = rng_for(cfg.seed, "fedgc-gen", v.gen_key(alpha), c, lab, j)
                guidance = v.guidance
                if guidance != "prompt" and not mine:  # no real example of this label here
                    guidance = "prompt"
                tp = (
                    task_prompt(v.prompt, lab, p.task_item, rng, llm_prompts)
                    if (v.prompt != "llm" or llm_prompts.get(lab))
                    else task_prompt("single", lab, p.task_item, rng)
                )
                ex = (
                    [_question(e) for e in rng.sample(mine, min(p.k, len(mine)))]
                    if guidance != "prompt"
                    else []
                )
                pid = f"c{c}-{lab}-{j}"
                items.append((pid, guided_prompt(guidance, tp, ex, p.task_item)))
                meta[pid] = {
                    "client": c,
                    "label": lab,
                    "guidance": guidance,
                    "examples": len(ex),
                }
    (ctx.folder / "prompts.json").write_text(
        json.dumps({pid: {"prompt": pr, **meta[pid]} for pid, pr in items}, ensure_ascii=False)
    )
    rep = run_job(
        gen, items, replace(p.generation, seed=cfg.seed), ctx.folder / "generations.jsonl"
    )
    held = {normalise(_question(r["instruction"])) for r in read_jsonl(data / "heldout.jsonl")}
    held |= {
        normalise(_question(r["instruction"])) for r in read_jsonl(data / "mia_nonmembers.jsonl")
    }
    real = {normalise(_question(r["instruction"])) for rows in private for r in rows}
    rejects: Counter[str] = Counter()
    seen: set[str] = set()
    per_client: list[list[dict[str, Any]]] = [[] for _ in private]
    job = read_job(ctx.folder / "generations.jsonl", meta)
    if job.failed:
        rejects["generation_failed"] += len(job.failed)
    for r in job.ok:
        q = parse_generated(r["generations"][0]["text"], p.min_words, p.max_words)
        if q is None:
            rejects["unparseable_or_length"] += 1
            continue
        k = normalise(q)
        if k in held:
            rejects["an_evaluation_item"] += 1
            continue
        if k in real:
            rejects["copy_of_a_real_example"] += 1
            continue
        if k in seen:
            rejects["duplicate"] += 1
            continue
        seen.add(k)
        m = meta[r["id"]]
        per_client[int(m["client"])].append(
            {
                "instruction": frame + q,
                "response": m["label"],
                "label": m["label"],
                "labels": labels,
                "domain": m["label"],
                "origin": "generated",
                "prompt_id": r["id"],
                "generator": r.get("generator"),
                "guidance": m["guidance"],
                "variant": v.gen_key(alpha),
            }
        )
    for c, rows in enumerate(per_client):
        write_jsonl(ctx.folder / f"generated_{c}.jsonl", rows)
    summary = {
        "budgets": budgets,
        "label_allocation": alloc_all,
        "asked": len(items),
        "generated": rep.generated,
        "kept": sum(map(len, per_client)),
        "kept_by_client": [len(x) for x in per_client],
        "rejected": dict(rejects),
        "llm_prompts": {k: len(v_) for k, v_ in llm_prompts.items()},
        "tokens_per_second": round(rep.tokens_per_second, 1),
    }
    ctx.console.print(summary)
    return summary
