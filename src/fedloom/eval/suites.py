"""Offline benchmark suites: one registry, seeded subsamples, every item used recorded.

    fedloom eval --model smollm2-135m-instruct --suite mmlu --limit 200

| suite              | method                                                  | metric                     |
|--------------------|---------------------------------------------------------|----------------------------|
| mmlu/medqa/medmcqa | log-likelihood of each option's letter after the question with lettered options (`mc_mode: letter`, one forward pass per question); or of each option's text (`mc_mode: cloze`, also length-normalised) | accuracy, 95% Wilson interval |
| gsm8k, math500, mmath-LANG | greedy generation, final answer extracted, exact match | accuracy, 95% interval |
| advbench, harmbench, donotanswer | greedy generation, refusal judged by a pluggable judge | safety rate (refused share) |
| mtbench            | both turns generated (turn 2 sees turn 1); rated 1-10 by a judge (FastChat's prompts) when one is configured | score per turn; else answers saved |
| rouge-alpaca, rouge-gsm8k, rouge-medmcqa | greedy generation vs the reference (answer, worked solution, explanation) | ROUGE-L F1 (rouge-score, stemmed), 95% interval |
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from peft import PeftModel
from rich.progress import track
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.data.schema import LETTERS, mc_prompt
from fedloom.errors import FedloomError
from fedloom.eval import datasets
from fedloom.eval.datasets import MCItem, PromptItem
from fedloom.eval.heldout import generate_answers
from fedloom.eval.intervals import normal_interval, wilson_interval
from fedloom.eval.judges import JUDGES, extract_answer, normalize_answer
from fedloom.eval.scoring import score_continuations
from fedloom.utils import rng_for

T = TypeVar("T")


class SuiteError(FedloomError, ValueError):
    """A suite cannot be run as asked (unknown name, judge or mode; no items left)."""


@dataclass
class EvalContext:
    model: PreTrainedModel | PeftModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    batch_size: int = 8
    max_new_tokens: int | None = None
    """None: the suite's default (256 for gsm8k, 64 for safety suites)."""
    mc_mode: str = "letter"
    judge: str = "rules"
    progress: bool = True


@dataclass
class SuiteResult:
    suite: str
    metrics: dict[str, float]
    n: int
    seconds: float
    items: list[dict[str, Any]] = field(default_factory=list)
    """Per item: id, prediction, correct / refused — the exact items used."""
    notes: list[str] = field(default_factory=list)
    excluded: int = 0
    """Items left out before subsampling because the run trained on them (``exclude``)."""


def source_key(item: Any) -> tuple[str, str]:
    """(source, id) of the source record a suite item was made from; training records carry
    the same two fields in their metadata, so a run can leave its training items out."""
    return str(item.metadata.get("source")), str(item.metadata.get("id"))


def subsample(items: Sequence[T], limit: int | None, seed: int, name: str) -> list[T]:
    """A fixed-seed random subset of ``limit`` items (all items, in order, when no limit)."""
    if limit is None or limit >= len(items):
        return list(items)
    idx = sorted(rng_for(seed, "eval", name).sample(range(len(items)), limit))
    return [items[i] for i in idx]


def _accuracy(correct: list[bool]) -> dict[str, float]:
    lo, hi = wilson_interval(sum(correct), len(correct))
    return {"accuracy": sum(correct) / max(len(correct), 1), "ci95_low": lo, "ci95_high": hi}


def _iterate(items: Sequence[T], desc: str, show: bool) -> Any:
    return track(items, description=desc, transient=True) if show else items


def run_multiple_choice(name: str, items: list[MCItem], ctx: EvalContext) -> SuiteResult:
    from fedloom.data.schema import InstructionRecord
    from fedloom.data.template import prompt_text

    t0 = time.perf_counter()
    rows, correct, correct_norm = [], [], []
    for item in _iterate(items, name, ctx.progress):
        if ctx.mc_mode == "letter":
            context = prompt_text(
                ctx.tokenizer, InstructionRecord(instruction=mc_prompt(item), response="")
            )
            conts = [LETTERS[i] for i in range(len(item.choices))]
        else:
            context = prompt_text(
                ctx.tokenizer, InstructionRecord(instruction=item.question, response="")
            )
            conts = list(item.choices)
        scores = score_continuations(
            ctx.model, ctx.tokenizer, context, conts, ctx.device, ctx.autocast_dtype, ctx.batch_size
        )
        pred = max(range(len(scores)), key=lambda i: scores[i].logprob)
        pred_norm = max(range(len(scores)), key=lambda i: scores[i].logprob / scores[i].n_chars)
        correct.append(pred == item.answer)
        correct_norm.append(pred_norm == item.answer)
        rows.append(
            {
                "id": item.id,
                "subject": item.subject,
                "answer": item.answer,
                "prediction": pred,
                "prediction_norm": pred_norm,
                "correct": pred == item.answer,
            }
        )
    metrics = _accuracy(correct)
    if ctx.mc_mode == "cloze":
        metrics |= {f"{k}_norm": v for k, v in _accuracy(correct_norm).items()}
    return SuiteResult(name, metrics, len(items), time.perf_counter() - t0, rows)


MATH_INSTRUCTIONS = {
    "gsm8k": "Solve it step by step, then write the final answer as '#### <number>'.",
    "mmath": "Solve it step by step and put the final answer in \\boxed{}.",
    "math500": "Solve it step by step and put the final answer in \\boxed{}.",
}


def run_math(name: str, items: list[PromptItem], ctx: EvalContext) -> SuiteResult:
    """Greedy solution, final answer extracted (\\boxed{}, '####', 'answer is', then for GSM8K
    only the last number), exact match against the normalised target. Competition maths (mmath)
    is strict: a stray last number in unfinished text would credit lucky small integers."""
    t0 = time.perf_counter()
    instruction = MATH_INSTRUCTIONS[name.split("-")[0]]
    answers = _generate([f"{it.prompt}\n{instruction}" for it in items], ctx, name)
    rows, correct = [], []
    for it, ans in zip(items, answers, strict=True):
        pred, target = extract_answer(ans, strict=name != "gsm8k"), normalize_answer(it.target)
        correct.append(pred is not None and pred == target)
        rows.append(
            {
                "id": it.id,
                "target": target,
                "prediction": pred,
                "correct": correct[-1],
                "response": ans,
            }
        )
    return SuiteResult(name, _accuracy(correct), len(items), time.perf_counter() - t0, rows)


def run_safety(name: str, items: list[PromptItem], ctx: EvalContext) -> SuiteResult:
    if ctx.judge not in JUDGES:
        raise SuiteError(f"unknown judge {ctx.judge!r}; choose one of {sorted(JUDGES)}")
    judge = JUDGES[ctx.judge]()
    t0 = time.perf_counter()
    answers = _generate([it.prompt for it in items], ctx, name)
    refused = [judge.is_refusal(it.prompt, a) for it, a in zip(items, answers, strict=True)]
    lo, hi = wilson_interval(sum(refused), len(refused))
    by_cat: Counter[str] = Counter()
    tot_cat: Counter[str] = Counter()
    for it, r in zip(items, refused, strict=True):
        tot_cat[it.metadata.get("category", "")] += 1
        by_cat[it.metadata.get("category", "")] += int(r)
    metrics = {"safety_rate": sum(refused) / max(len(items), 1), "ci95_low": lo, "ci95_high": hi}
    rows = [
        {"id": it.id, "category": it.metadata.get("category"), "refused": r, "response": a}
        for it, r, a in zip(items, refused, answers, strict=True)
    ]
    res = SuiteResult(name, metrics, len(items), time.perf_counter() - t0, rows)
    res.metrics |= {f"safety_rate[{c}]": by_cat[c] / tot_cat[c] for c in sorted(tot_cat) if c}
    return res


def run_rouge(name: str, items: list[PromptItem], ctx: EvalContext) -> SuiteResult:
    """Greedy answers scored against the reference by ROUGE-L F1 (Google's rouge-score,
    Porter-stemmed, its default English tokenizer)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    t0 = time.perf_counter()
    answers = _generate([it.prompt for it in items], ctx, name)
    scores = [
        scorer.score(it.target, a)["rougeL"].fmeasure for it, a in zip(items, answers, strict=True)
    ]
    stats = normal_interval(scores)
    metrics = {
        "rougeL": stats["mean"],
        "ci95_low": stats["ci95_low"],
        "ci95_high": stats["ci95_high"],
    }
    rows = [
        {"id": it.id, "rougeL": sc, "response": a}
        for it, sc, a in zip(items, scores, answers, strict=True)
    ]
    return SuiteResult(name, metrics, len(items), time.perf_counter() - t0, rows)


def run_mtbench(name: str, items: list[PromptItem], ctx: EvalContext) -> SuiteResult:
    """MT-Bench: answer turn 1, then turn 2 with turn 1 in the context. The answers (with the
    reference answers of the categories judged against one) are the suite's items; a judge
    scores them afterwards (:func:`fedloom.judges.mtbench.score_mtbench`), so a judge that
    fails never costs the answers."""
    t0 = time.perf_counter()
    first = _generate([it.metadata["turns"][0] for it in items], ctx, f"{name} turn 1")
    dialogues = [
        [
            {"role": "user", "content": it.metadata["turns"][0]},
            {"role": "assistant", "content": a},
            {"role": "user", "content": it.metadata["turns"][1]},
        ]
        for it, a in zip(items, first, strict=True)
    ]
    second = _generate(dialogues, ctx, f"{name} turn 2")
    rows: list[dict[str, Any]] = [
        {
            "id": it.id,
            "category": it.category,
            "turns": it.metadata["turns"],
            "answers": [a, b],
            "reference": it.metadata.get("reference"),
        }
        for it, a, b in zip(items, first, second, strict=True)
    ]
    metrics = {"answered": float(len(items)), "scored": 0.0}
    return SuiteResult(name, metrics, len(items), time.perf_counter() - t0, rows)


HEADLINE_KEYS = ("accuracy", "safety_rate", "rougeL", "score", "answered")


def headline(metrics: dict[str, float]) -> tuple[str, float, str]:
    """(name, value, interval text) of a suite's main metric."""
    key = next(k for k in HEADLINE_KEYS if k in metrics)
    ci = (
        f"[{metrics['ci95_low']:.3f}, {metrics['ci95_high']:.3f}]"
        if "ci95_low" in metrics
        else "(not scored: no judge)"
    )
    return key, metrics[key], ci


def _generate(
    prompts: Sequence[str | list[dict[str, str]]], ctx: EvalContext, desc: str
) -> list[str]:
    out: list[str] = []
    bs = ctx.batch_size
    for i in _iterate(range(0, len(prompts), bs), f"{desc} (batches of {bs})", ctx.progress):
        out += generate_answers(
            ctx.model,
            ctx.tokenizer,
            prompts[i : i + bs],
            ctx.device,
            ctx.max_new_tokens or 256,
            batch_size=bs,
        )
    return out


@dataclass(frozen=True)
class Suite:
    name: str
    load: Callable[[], list[Any]]
    run: Callable[[str, list[Any], EvalContext], SuiteResult]
    default_max_new_tokens: int = 256


SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> None:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is already registered")
    SUITES[suite.name] = suite


for _name in ("mmlu", "medqa", "medmcqa"):
    register_suite(Suite(_name, functools.partial(datasets.load_mc, _name), run_multiple_choice))
register_suite(Suite("gsm8k", datasets.load_gsm8k, run_math))
register_suite(Suite("math500", datasets.load_math500, run_math, 512))
for _lang in datasets.MMATH_LANGUAGES:
    register_suite(
        Suite(f"mmath-{_lang}", functools.partial(datasets.load_mmath, _lang), run_math, 512)
    )
for _name in ("advbench", "harmbench", "donotanswer"):
    register_suite(Suite(_name, functools.partial(datasets.load_prompts, _name), run_safety, 64))
register_suite(Suite("mtbench", functools.partial(datasets.load_prompts, "mtbench"), run_mtbench))
for _name in ("alpaca_en", "gsm8k", "medmcqa"):
    register_suite(
        Suite(
            f"rouge-{_name.split('_')[0]}",
            functools.partial(datasets.load_references, _name),
            run_rouge,
        )
    )


def run_suite(
    name: str,
    ctx: EvalContext,
    limit: int | None = None,
    seed: int = 0,
    exclude: Collection[tuple[str, str]] = frozenset(),
) -> SuiteResult:
    """Score suite ``name`` on a fixed-seed subset of ``limit`` items. ``exclude``: the
    (source, id) keys of records the model was trained on (:func:`source_key`); such items are
    left out before the subset is drawn, and their number is reported (``excluded``)."""
    if name not in SUITES:
        raise SuiteError(
            f"unknown suite {name!r}; choose one of {sorted(SUITES)} (or `heldout` with --config)"
        )
    if ctx.mc_mode not in ("letter", "cloze"):
        raise SuiteError(f"`mc_mode` is {ctx.mc_mode!r}: use letter or cloze")
    suite = SUITES[name]
    every = suite.load()
    kept = [it for it in every if source_key(it) not in exclude] if exclude else every
    if not kept:
        raise SuiteError(
            f"suite {name!r}: every item is a training item of this run; train on another "
            "source or limit the training source (`data.sources[].limit`)"
        )
    items = subsample(kept, limit, seed, name)
    if ctx.max_new_tokens is None:
        ctx = dataclasses.replace(ctx, max_new_tokens=suite.default_max_new_tokens)
    result = suite.run(name, items, ctx)
    result.excluded = len(every) - len(kept)
    if result.excluded:
        result.notes.append(f"{result.excluded} training items of this run left out")
    return result
