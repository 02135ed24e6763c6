"""Offline benchmark suites: one registry, seeded subsamples, every item used recorded.

    fedloom eval --model smollm2-135m-instruct --suite mmlu --limit 200

| suite              | method                                                  | metric                     |
|--------------------|---------------------------------------------------------|----------------------------|
| mmlu/medqa/medmcqa | log-likelihood of each option's letter after the question with lettered options (`mc_mode: letter`, one forward pass per question); or of each option's text (`mc_mode: cloze`, also length-normalised) | accuracy, 95% Wilson interval |
| gsm8k, mmath-LANG  | greedy generation, final answer extracted, exact match   | accuracy, 95% interval     |
| advbench, harmbench, donotanswer | greedy generation, refusal judged by a pluggable judge | safety rate (refused share) |
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from peft import PeftModel
from rich.progress import track
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.eval import datasets
from fedloom.eval.datasets import MCItem, PromptItem
from fedloom.eval.heldout import generate_answers
from fedloom.eval.judges import JUDGES, extract_answer, normalize_answer
from fedloom.eval.scoring import score_continuations
from fedloom.utils import rng_for

LETTERS = "ABCDEFGHIJ"
T = TypeVar("T")


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


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


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


def mc_prompt(item: MCItem) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
    return f"{item.question}\n\n{options}\n\nAnswer with the letter of the correct option."


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
        raise ValueError(f"unknown judge {ctx.judge!r}; choose one of {sorted(JUDGES)}")
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


def _generate(prompts: list[str], ctx: EvalContext, desc: str) -> list[str]:
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


for _name, _loader in (
    ("mmlu", datasets.load_mmlu),
    ("medqa", datasets.load_medqa),
    ("medmcqa", datasets.load_medmcqa),
):
    register_suite(Suite(_name, _loader, run_multiple_choice))
register_suite(Suite("gsm8k", datasets.load_gsm8k, run_math))
for _lang in datasets.MMATH_LANGUAGES:
    register_suite(
        Suite(f"mmath-{_lang}", functools.partial(datasets.load_mmath, _lang), run_math, 512)
    )
for _name, _prompts in (
    ("advbench", datasets.load_advbench),
    ("harmbench", datasets.load_harmbench),
    ("donotanswer", datasets.load_donotanswer),
):
    register_suite(Suite(_name, _prompts, run_safety, default_max_new_tokens=64))


def run_suite(name: str, ctx: EvalContext, limit: int | None = None, seed: int = 0) -> SuiteResult:
    if name not in SUITES:
        raise ValueError(
            f"unknown suite {name!r}; choose one of {sorted(SUITES)} (or `heldout` with --config)"
        )
    if ctx.mc_mode not in ("letter", "cloze"):
        raise ValueError(f"`mc_mode` is {ctx.mc_mode!r}: use letter or cloze")
    suite = SUITES[name]
    items = subsample(suite.load(), limit, seed, name)
    if ctx.max_new_tokens is None:
        ctx = dataclasses.replace(ctx, max_new_tokens=suite.default_max_new_tokens)
    return suite.run(name, items, ctx)
