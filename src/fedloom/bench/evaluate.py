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

HELPFULNESS_TEMPLATE = "single-v1"
"""FastChat's reference-free single-answer grading prompt (1-10)."""


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
    """The suites' normal-approximation 95% interval (:func:`fedloom.eval.suites.normal_interval`)
    with the count; NaN when there are no values."""
    from fedloom.eval.suites import normal_interval

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


def evaluate_model(
    model_cfg: Any,
    adapter: Path | None,
    heldout: list[Record],
    trained_keys: set[tuple[str, str]],
    bench: Any,
    task: str,
    max_seq_len: int,
    seed: int,
) -> CellEval:
    """Score the base model (``adapter=None``) or base + the LoRA adapter in ``adapter``."""
    import torch
    from peft import PeftModel

    from fedloom.data.template import tokenize_all
    from fedloom.eval.heldout import example_losses, generate_answers
    from fedloom.eval.judges import make_rating_judge, parse_rating
    from fedloom.eval.suites import EvalContext, run_suite
    from fedloom.models import load_model

    loaded = load_model(model_cfg)
    model: Any = loaded.model
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    tok, dev = loaded.tokenizer, loaded.device
    judge = make_rating_judge(bench.judge)
    metrics: dict[str, dict[str, Any]] = {}
    answers: list[dict[str, Any]] = []
    per_item: dict[str, ItemScores] = {}
    items = heldout[: bench.heldout]
    with torch.no_grad():
        if task == "sft":
            ex, _, rep = tokenize_all(tok, items, max_seq_len)
            losses = example_losses(model, ex, int(tok.pad_token_id), dev, loaded.autocast_dtype)
            metrics["heldout_loss"] = mean_interval(losses) | {
                "dropped": rep.dropped,
                "truncated": rep.truncated,
                "items": [round(v, 6) for v in losses],  # per held-out record, in order: paired
            }
            per_item["heldout_loss"] = ItemScores(
                "held-out loss", True, {str(i): float(v) for i, v in enumerate(losses)}, rep.dropped
            )
        if bench.rouge:
            from rouge_score import rouge_scorer

            asked = items[: bench.rouge]
            outs = generate_answers(
                model, tok, [record_prompt(r) for r in asked], dev, bench.max_new_tokens
            )
            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            scores = [
                scorer.score(reference(r), a)["rougeL"].fmeasure
                for r, a in zip(asked, outs, strict=True)
            ]
            metrics["rougeL"] = mean_interval(scores)
            per_item["rougeL"] = ItemScores(
                "ROUGE-L", False, {str(i): float(v) for i, v in enumerate(scores)}
            )
            ratings: list[float] = []
            unparsed = 0
            for r, a, s in zip(asked, outs, scores, strict=True):
                row: dict[str, Any] = {"kind": "heldout", "prompt": record_prompt(r)}
                row |= {"answer": a, "rougeL": s, "helpfulness": None}
                if judge is not None:
                    from fedloom.data.catalog import mtbench_judge_prompts

                    tpl = mtbench_judge_prompts()[HELPFULNESS_TEMPLATE]
                    q = record_prompt(r)
                    q_text = q if isinstance(q, str) else q[-1]["content"]
                    reply = judge.complete(
                        tpl["system_prompt"],
                        tpl["prompt_template"].format(question=q_text, answer=a),
                    )
                    rating = parse_rating(reply)
                    row["helpfulness"] = rating
                    if rating is None:
                        unparsed += 1
                    else:
                        ratings.append(rating)
                answers.append(row)
            metrics["helpfulness"] = (
                mean_interval(ratings) | {"judge": judge.name, "unparsed": unparsed}
                if judge is not None
                else {"mean": None, "scored": 0, "answered": len(asked), "judge": None}
            )
        ctx = EvalContext(
            model,
            tok,
            dev,
            loaded.autocast_dtype,
            batch_size=8,
            max_new_tokens=bench.max_new_tokens,
            progress=False,
            rating_judge=judge,
        )
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
    return CellEval(metrics, answers, per_item)
