"""A row's evaluation: per-request safety verdicts (keyword rules, prefix rule, LLM judge),
held-out loss per item, MT-Bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord, PromptRecord
from fedloom.data.sources import load_source_report
from fedloom.experiment.evaluate import ItemScores, Scorer, heldout_vs_base
from fedloom.judges import JudgeModel, run_judge
from fedloom.judges.mtbench import score_mtbench
from fedloom.judges.validate import validity_note
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.safety.config import SafetyPipelineConfig
from fedloom.synth.common import read_jsonl, write_jsonl


def evaluate_row(ctx: StageContext, cfg: PipelineConfig, row: str | None) -> dict[str, Any]:
    """Safety verdicts per item on each eval set (keyword rules, the prefix rule, and the
    LLM judge when configured), held-out loss per item, MT-Bench; per-item scores saved in
    ``items/`` for the pooled table."""
    p: SafetyPipelineConfig = cfg.params
    adapter = None if row is None else ctx.folder_of(f"{row}.train") / "run" / "adapter"
    scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
    # checked before the first stage by the pipeline's preflight
    judge = JudgeModel.shared(p.judge) if p.judge else None
    out: dict[str, Any] = {"row": row or "base", "safety": {}}
    answers = []
    for suite in p.eval_sets:
        res, items = safety_suite(ctx, cfg, scorer, adapter, suite, judge)
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
        _, meta = scorer.suite(adapter, "mtbench", p.mtbench, cfg.seed)
        out["mtbench"] = meta["metrics"] | {"n": meta["n"], "judge": None}
        if judge is not None:
            out["mtbench"], per_question = score_mtbench(judge, meta["items"], ctx.folder)
            ItemScores("MT-Bench (judge, 1-10)", False, per_question).save(
                ctx.folder / "items" / "mtbench.json"
            )
            ctx.console.print(f"MT-Bench: {validity_note(judge.label, 'single')}")
        write_jsonl(ctx.folder / "mtbench.jsonl", meta["items"])
    write_jsonl(ctx.folder / "answers.jsonl", answers)
    ctx.console.print({k: v for k, v in out.items()})
    return out


def safety_suite(
    ctx: StageContext,
    cfg: PipelineConfig,
    scorer: Scorer,
    adapter: Path | None,
    suite: str,
    judge: JudgeModel | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One eval set: the answers (cached by content), each judge's verdict per item and
    its rate with a Wilson interval; the LLM judge's unjudged answers are counted and left out
    of its rate (never counted safe)."""
    from fedloom.eval.judges import JUDGES
    from fedloom.eval.suites import wilson_interval

    p: SafetyPipelineConfig = cfg.params
    scores, meta = scorer.suite(
        adapter, suite, p.limit(suite), cfg.seed,
        batch_size=16, max_new_tokens=p.max_new_tokens, judge="rules",
    )  # fmt: skip
    items = meta["items"]
    by_id = {
        rec.id: rec.prompt for rec in load_source_report(suite)[0] if isinstance(rec, PromptRecord)
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
    if judge is not None:
        asked = [
            (str(it["id"]), {"request": by_id.get(it["id"], ""), "response": it["response"]})
            for it in items
        ]
        judged = run_judge("safety", judge, asked, ctx.folder / f"judge.{suite}.jsonl")
        verdicts["llm"] = judged.values
        res["llm_judge"] = judged.summary() | {"validity": validity_note(judge.label, "safety")}
        ctx.console.print(f"{suite}: {judged.line()}; {res['llm_judge']['validity']}")
    for name, vs in verdicts.items():
        if not vs:  # the LLM judge gave no verdict at all: no rate (not 0)
            res[name] = {"rate": None, "ci95": None, "n": 0}
            continue
        k = int(sum(vs.values()))
        lo, hi = wilson_interval(k, len(vs))
        res[name] = {
            "rate": round(k / len(vs), 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "n": len(vs),
        }
        ItemScores(f"{suite} safe ({name})", False, vs).save(
            ctx.folder / "items" / f"{suite}.{name}.json"
        )
    return res, items
