"""One bench cell's evaluation: held-out loss, ROUGE-L and helpfulness on the federation's
held-out items, and the offline suites, each with its 95% interval.

The same function scores the base model (``adapter=None``) once per federation and every trained
cell, on the same items: the held-out items are never trained on (they are split off before the
partition), and suites leave out any item of a source the federation trains on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.data.schema import (
    ConversationRecord,
    InstructionRecord,
    PreferenceRecord,
    Record,
    as_instruction,
    record_prompt,
)
from fedloom.experiment.evaluate import ItemScores
from fedloom.judges import JudgeModel, run_judge
from fedloom.judges.mtbench import score_mtbench
from fedloom.judges.validate import validity_note


def reference(r: Record) -> str:
    """The reference answer of a held-out record for ROUGE-L: an instruction's response, a
    conversation's first assistant turn, a preference pair's chosen answer."""
    if isinstance(r, InstructionRecord):
        return r.response
    if isinstance(r, ConversationRecord):
        return next(m["content"] for m in r.messages if m["role"] == "assistant")
    if isinstance(r, PreferenceRecord):
        return r.chosen
    return as_instruction(r).response


def mean_interval(values: list[float]) -> dict[str, float | int]:
    """The suites' normal-approximation 95% interval (:func:`fedloom.eval.intervals.normal_interval`)
    with the count; NaN when there are no values."""
    from fedloom.eval.intervals import normal_interval

    if not values:
        return {"mean": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"), "n": 0}
    return normal_interval(values) | {"n": len(values)}


@dataclass
class CellEval:
    """Scores of one model on one federation's evaluation items."""

    metrics: dict[str, dict[str, Any]]
    """metric -> {mean/value, ci95_low, ci95_high, n, ...}"""
    answers: list[dict[str, Any]]
    items: dict[str, ItemScores] = field(default_factory=dict)
    """metric -> per-item values (for paired comparisons between cells)."""

    def save(self, folder: Path) -> None:
        (folder / "eval.json").write_text(json.dumps(self.metrics, indent=2))
        with open(folder / "answers.jsonl", "w") as f:
            for a in self.answers:
                f.write(json.dumps(a, ensure_ascii=False) + "\n")
        for name, scores in self.items.items():
            scores.save(folder / "items" / f"{name}.json")


def _heldout_loss(
    model: Any, loaded: Any, items: list[Record], max_seq_len: int
) -> tuple[dict[str, Any], ItemScores]:
    """Loss per held-out record (SFT federations), its mean with the 95% interval."""
    from fedloom.data.template import tokenize_all
    from fedloom.eval.heldout import example_losses

    tok = loaded.tokenizer
    ex, _, rep = tokenize_all(tok, items, max_seq_len)
    losses = example_losses(model, ex, int(tok.pad_token_id), loaded.device, loaded.autocast_dtype)
    metric = mean_interval(losses) | {
        "dropped": rep.dropped,
        "truncated": rep.truncated,
        "items": [round(v, 6) for v in losses],  # per held-out record, in order: paired
    }
    scores = ItemScores(
        "held-out loss", True, {str(i): float(v) for i, v in enumerate(losses)}, rep.dropped
    )
    return metric, scores


def _answers(
    model: Any, loaded: Any, asked: list[Record], bench: Any
) -> tuple[dict[str, dict[str, Any]], ItemScores, list[dict[str, Any]]]:
    """Greedy answers to held-out prompts, scored by ROUGE-L against the reference (rated for
    helpfulness afterwards when a judge is configured: :func:`judge_answers`)."""
    from rouge_score import rouge_scorer

    from fedloom.eval.heldout import generate_answers

    prompts = [record_prompt(r) for r in asked]
    outs = generate_answers(model, loaded.tokenizer, prompts, loaded.device, bench.max_new_tokens)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [
        scorer.score(reference(r), a)["rougeL"].fmeasure for r, a in zip(asked, outs, strict=True)
    ]
    metrics: dict[str, dict[str, Any]] = {"rougeL": mean_interval(scores)}
    rows = [
        {"kind": "heldout", "id": str(i), "prompt": q, "answer": a, "rougeL": sc}
        for i, (q, a, sc) in enumerate(zip(prompts, outs, scores, strict=True))
    ]
    metrics["helpfulness"] = {"mean": None, "scored": 0, "answered": len(asked), "judge": None}
    rouge = ItemScores("ROUGE-L", False, {str(i): float(v) for i, v in enumerate(scores)})
    return metrics, rouge, rows


def evaluate_model(
    model_cfg: Any,
    adapter: Path | None,
    heldout: list[Record],
    trained_keys: set[tuple[str, str]],
    bench: Any,
    task: str,
    max_seq_len: int,
    seed: int,
    folder: Path,
) -> CellEval:
    """Score the base model (``adapter=None``) or base + the LoRA adapter in ``adapter``
    (judge jobs in ``folder``):
    held-out loss, ROUGE-L and helpfulness on the federation's held-out items, the suites."""
    import torch
    from peft import PeftModel

    from fedloom.eval.suites import EvalContext, run_suite
    from fedloom.models import load_model

    # checked before the first stage by the pipeline's preflight
    judge = JudgeModel.shared(bench.judge) if bench.judge is not None else None
    loaded = load_model(model_cfg)
    model: Any = loaded.model
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    metrics: dict[str, dict[str, Any]] = {}
    answers: list[dict[str, Any]] = []
    per_item: dict[str, ItemScores] = {}
    items = heldout[: bench.heldout]
    with torch.no_grad():
        if task == "sft":
            metrics["heldout_loss"], per_item["heldout_loss"] = _heldout_loss(
                model, loaded, items, max_seq_len
            )
        if bench.rouge:
            got, per_item["rougeL"], answers = _answers(model, loaded, items[: bench.rouge], bench)
            metrics |= got
        ctx = EvalContext(
            model, loaded.tokenizer, loaded.device, loaded.autocast_dtype, batch_size=8,
            max_new_tokens=bench.max_new_tokens, progress=False,
        )  # fmt: skip
        for suite in bench.suites:
            res = run_suite(suite, ctx, bench.limit(suite), seed, exclude=trained_keys)
            metrics[suite] = dict(res.metrics) | {"n": res.n, "excluded": res.excluded}
            answers += [{"kind": suite, **it} for it in res.items]
            key = next((k for k in ("correct", "refused") if res.items and k in res.items[0]), None)
            if key is not None:
                per_item[suite] = ItemScores(
                    f"{suite} ({key})",
                    False,
                    {str(it["id"]): float(bool(it[key])) for it in res.items},
                )
    if judge is not None:
        judge_answers(judge, answers, metrics, per_item, folder)
    return CellEval(metrics, answers, per_item)


def judge_answers(
    judge: JudgeModel,
    answers: list[dict[str, Any]],
    metrics: dict[str, dict[str, Any]],
    per_item: dict[str, ItemScores],
    folder: Path,
) -> None:
    """Helpfulness (FastChat's `single-v1`, 1-10) of the held-out answers and the MT-Bench
    score of the MT-Bench answers, with the judge's parse rate and validity beside each;
    unjudged answers counted, never scored."""
    held = [a for a in answers if a["kind"] == "heldout"]
    if held:
        items = [(a["id"], {"question": _text(a["prompt"]), "answer": a["answer"]}) for a in held]
        judged = run_judge("single", judge, items, folder / "judge.helpfulness.jsonl")
        values = list(judged.values.values())
        metrics["helpfulness"] = (
            mean_interval(values)
            | judged.summary()
            | {"validity": validity_note(judge.label, "single")}
        )
        per_item["helpfulness"] = ItemScores("helpfulness (judge, 1-10)", False, judged.values)
    mt = [a for a in answers if a["kind"] == "mtbench"]
    if mt:
        scored, per_question = score_mtbench(judge, mt, folder)
        metrics["mtbench"] |= scored | {"validity": validity_note(judge.label, "single")}
        per_item["mtbench"] = ItemScores("MT-Bench (judge, 1-10)", False, per_question)


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else str(prompt[-1]["content"])
