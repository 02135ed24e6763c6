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
        folder.mkdir(parents=True, exist_ok=True)
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


def _preference(
    model: Any, loaded: Any, items: list[Record], max_seq_len: int, beta: float
) -> tuple[dict[str, dict[str, Any]], dict[str, ItemScores]]:
    """Per held-out preference pair (DPO federations): DPO's loss with the base model as the
    reference (the base itself scores log 2 on every pair) and whether the implicit reward
    prefers the chosen answer (a tie counts half: the base scores 0.5), with their means."""
    from fedloom.data.template import tokenize_all
    from fedloom.eval.preference import score_preference_pairs

    pairs, _, rep = tokenize_all(loaded.tokenizer, items, max_seq_len)
    per = score_preference_pairs(
        model, pairs, int(loaded.tokenizer.pad_token_id), loaded.device, loaded.autocast_dtype,
        beta, batch_size=4,
    )  # fmt: skip
    losses, accs = per["loss"], per["reward_accuracy"]
    metrics = {
        "dpo_loss": mean_interval(losses) | {"dropped": rep.dropped, "truncated": rep.truncated},
        "reward_accuracy": mean_interval(accs),
    }
    scores = {
        "dpo_loss": ItemScores(
            "held-out DPO loss", True, {str(i): v for i, v in enumerate(losses)}, rep.dropped
        ),
        "reward_accuracy": ItemScores(
            "reward accuracy", False, {str(i): v for i, v in enumerate(accs)}, rep.dropped
        ),
    }
    return metrics, scores


def combine_clients(evs: dict[str, CellEval]) -> tuple[CellEval, str]:
    """The local baseline's cell from its clients' evaluations (each client trained alone and
    was scored on the same items): per metric with per-item scores, the item's mean over the
    clients (the expected client's model, paired with the other arms item by item), its mean
    with the 95% interval and each client's mean; other metrics are the first client's. Also
    the best client by held-out loss (DPO loss for preference federations; else the first
    metric) — chosen on the evaluation items themselves, so an optimistic figure."""
    if not evs:
        raise ValueError("combine_clients: no client evaluations")
    first = next(iter(evs.values()))
    metrics: dict[str, dict[str, Any]] = dict(first.metrics)
    items: dict[str, ItemScores] = {}
    for name, sc in first.items.items():
        if not all(name in e.items and e.items[name].values.keys() == sc.values.keys()
                   for e in evs.values()):  # fmt: skip
            continue
        values = {
            k: sum(e.items[name].values[k] for e in evs.values()) / len(evs) for k in sc.values
        }
        items[name] = ItemScores(sc.metric, sc.lower_is_better, values, sc.dropped)
        metrics[name] = mean_interval(list(values.values())) | {
            "clients": {c: e.items[name].mean for c, e in evs.items()},
            "items": [round(v, 6) for v in values.values()],
        }
    key = next((k for k in ("heldout_loss", "dpo_loss") if k in items), next(iter(items), None))
    if key is None:
        best = next(iter(evs))
    else:
        sign = 1.0 if items[key].lower_is_better else -1.0
        best = min(evs, key=lambda c: sign * evs[c].items[key].mean)
    answers = [a | {"client": c} for c, e in evs.items() for a in e.answers]
    for name, m in metrics.items():
        if name in items:
            m["best_client"] = {"client": best, "mean": evs[best].items[name].mean}
    return CellEval(metrics, answers, items), best


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


def scorable(
    tokenizer: Any, records: list[Record], n: int, max_seq_len: int
) -> tuple[list[Record], int]:
    """The first ``n`` held-out records that can be scored at ``max_seq_len`` (a prompt that
    leaves no room for a response cannot), and how many were passed over for that."""
    from fedloom.data.template import tokenize_record

    kept: list[Record] = []
    skipped = 0
    for r in records:
        if len(kept) == n:
            break
        if tokenize_record(tokenizer, r, max_seq_len) is None:
            skipped += 1
        else:
            kept.append(r)
    return kept, skipped


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
    beta: float = 0.1,
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
    items, too_long = scorable(loaded.tokenizer, heldout, bench.heldout, max_seq_len)
    with torch.no_grad():
        if task == "sft":
            metrics["heldout_loss"], per_item["heldout_loss"] = _heldout_loss(
                model, loaded, items, max_seq_len
            )
        if task == "dpo":
            got, scores = _preference(model, loaded, items, max_seq_len, beta)
            metrics |= got
            per_item |= scores
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
    for name in ("heldout_loss", "dpo_loss"):
        if name in metrics:  # records passed over before the n scored ones: too long to score
            metrics[name]["too_long_skipped"] = too_long
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
