"""The generation stage: each client's budget and label allocation, prompts with guidance, a resumable job, rejects by reason."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedloom.generation import build_generator, read_job, run_complete
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


def llm_task_prompts(
    gen: Any, labels: list[str], p: FedGCConfig, seed: int, folder: Path
) -> dict[str, list[str]]:
    """Prompt design `llm`: the generator writes the task prompts, once per label."""
    asks = [
        (f"p-{lab}-{j}", LLM_PROMPT_REQUEST.format(task_item=p.task_item, label=lab))
        for lab in labels
        for j in range(p.llm_prompts_per_label)
    ]
    run_complete(gen, asks, replace(p.generation, seed=seed), folder / "llm_prompts.jsonl")
    out: dict[str, list[str]] = {}
    for pid, reply in read_job(folder / "llm_prompts.jsonl", [i for i, _ in asks]).texts().items():
        text = reply.strip().splitlines()
        if text and len(text[0].split()) >= 4:
            out.setdefault(pid.split("-")[1], []).append(text[0].strip())
    return out


def client_prompts(
    private: list[list[dict[str, Any]]],
    budgets: list[int],
    labels: list[str],
    v: Variant,
    key: str,
    p: FedGCConfig,
    seed: int,
    llm_prompts: dict[str, list[str]],
) -> tuple[list[tuple[str, str]], dict[str, dict[str, Any]], list[dict[str, int]]]:
    """Each client's prompts: its budget allocated over the labels, each prompt a task prompt
    (the variant's design) with the guidance (k of the client's own questions of that label,
    where it has some). Returns (id, prompt) items, their metadata, and the allocations."""
    items: list[tuple[str, str]] = []
    meta: dict[str, dict[str, Any]] = {}
    allocations = []
    for c, rows in enumerate(private):
        have = Counter(r["label"] for r in rows)
        alloc = allocate_labels(
            budgets[c], {lab: have.get(lab, 0) for lab in labels}, v.label_allocation
        )
        allocations.append(alloc)
        for lab, n in alloc.items():
            mine = [r["instruction"] for r in rows if r["label"] == lab]
            for j in range(n):
                rng = rng_for(seed, "fedgc-gen", key, c, lab, j)
                guidance = v.guidance if mine else "prompt"  # no real example of this label here
                design = v.prompt if (v.prompt != "llm" or llm_prompts.get(lab)) else "single"
                tp = task_prompt(design, lab, p.task_item, rng, llm_prompts)
                ex = (
                    [_question(e) for e in rng.sample(mine, min(p.k, len(mine)))]
                    if guidance != "prompt"
                    else []
                )
                pid = f"c{c}-{lab}-{j}"
                items.append((pid, guided_prompt(guidance, tp, ex, p.task_item)))
                meta[pid] = {"client": c, "label": lab, "guidance": guidance, "examples": len(ex)}
    return items, meta, allocations


def keep_generated(
    rows: list[dict[str, Any]],
    meta: dict[str, dict[str, Any]],
    held: set[str],
    real: Sequence[set[str]],
    p: FedGCConfig,
) -> tuple[list[list[tuple[str, dict[str, Any]]]], Counter[str]]:
    """The generated questions kept per client, as (question, the job row); rejects by reason
    (unparseable or out of length, an evaluation item, a copy of one of the client's own real
    examples, a duplicate of the client's own earlier generation). ``real[c]``: client c's
    normalised private questions. Each client is filtered against its own data only, as a
    client in a real federation can be (none sees another's text); the evaluation items are
    the experiment's, kept out of every client's training."""
    rejects: Counter[str] = Counter()
    seen: list[set[str]] = [set() for _ in real]
    per_client: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in real]
    for r in rows:
        c = int(meta[r["id"]]["client"])
        q = parse_generated(r["generations"][0]["text"], p.min_words, p.max_words)
        k = normalise(q) if q is not None else ""
        if q is None:
            rejects["unparseable_or_length"] += 1
        elif k in held:
            rejects["an_evaluation_item"] += 1
        elif k in real[c]:
            rejects["copy_of_a_real_example"] += 1
        elif k in seen[c]:
            rejects["duplicate"] += 1
        else:
            seen[c].add(k)
            per_client[c].append((q, r))
    return per_client, rejects


def generate_stage(
    ctx: StageContext, cfg: PipelineConfig, v: Variant, alpha: float
) -> dict[str, Any]:
    """One variant's generated examples per client, with provenance; rejects by reason."""
    p: FedGCConfig = cfg.params
    data, key = ctx.folder_of(f"data-a{alpha}"), v.gen_key(alpha)
    labels: list[str] = ctx.summary_of(f"data-a{alpha}")["labels"]
    private = [read_jsonl(data / f"private_{c}.jsonl") for c in range(p.num_clients)]
    # generated examples are framed exactly as the private ones (the source's prompt)
    first = next(r["instruction"] for rows in private for r in rows)
    frame = first[: len(first) - len(_question(first))]
    budgets = BUDGETS[v.budget](v.total, [len(rows) for rows in private])
    gen = build_generator(p.generator)
    llm = llm_task_prompts(gen, labels, p, cfg.seed, ctx.folder) if v.prompt == "llm" else {}
    items, meta, allocations = client_prompts(private, budgets, labels, v, key, p, cfg.seed, llm)
    (ctx.folder / "prompts.json").write_text(
        json.dumps({pid: {"prompt": pr, **meta[pid]} for pid, pr in items}, ensure_ascii=False)
    )
    rep = run_complete(
        gen, items, replace(p.generation, seed=cfg.seed), ctx.folder / "generations.jsonl"
    )
    held = {normalise(_question(r["instruction"])) for f in ("heldout", "mia_nonmembers")
            for r in read_jsonl(data / f"{f}.jsonl")}  # fmt: skip
    real = [{normalise(_question(r["instruction"])) for r in rows} for rows in private]
    job = read_job(ctx.folder / "generations.jsonl", meta)
    per_client, rejects = keep_generated(job.ok, meta, held, real, p)
    if job.failed:
        rejects["generation_failed"] += len(job.failed)
    for c, kept in enumerate(per_client):
        rows = [
            {"instruction": frame + q, "response": meta[r["id"]]["label"], "labels": labels}
            | {"label": meta[r["id"]]["label"], "domain": meta[r["id"]]["label"]}
            | {"origin": "generated", "prompt_id": r["id"], "generator": r.get("generator")}
            | {"guidance": meta[r["id"]]["guidance"], "variant": key}
            for q, r in kept
        ]
        write_jsonl(ctx.folder / f"generated_{c}.jsonl", rows)
    summary = {
        "budgets": budgets,
        "label_allocation": allocations,
        "asked": len(items),
        "generated": rep.generated,
        "kept": sum(map(len, per_client)),
        "kept_by_client": [len(x) for x in per_client],
        "rejected": dict(rejects),
        "llm_prompts": {k: len(v_) for k, v_ in llm.items()},
        "tokens_per_second": round(rep.tokens_per_second, 1),
    }
    ctx.console.print(summary)
    return summary
