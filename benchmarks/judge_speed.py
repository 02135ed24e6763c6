"""Judge throughput on this CPU: judged items/s of the `single` judge (verdict-first, 16 new
tokens) at batch 1 and batch 8, and of the `reasoning` form (FastChat's explain-then-rate
prompts) at batch 8, on the same GSM8K validation items.

    python benchmarks/judge_speed.py                                # the local Qwen 1.5B judge
    python benchmarks/judge_speed.py --model smollm2-135m-instruct --items 16

Judge prompts are prefill-bound (200-500 prompt tokens, a verdict of a few tokens): the figures
say what batching buys and what explaining first costs. The settings run interleaved
(`--repeats` rounds, best kept: this machine's speed drifts); each run judges fresh (no job
file is reused).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fedloom.generation import GeneratorConfig
from fedloom.judges import JudgeConfig, JudgeModel, run_judge
from fedloom.judges.cases import math_contrasts
from fedloom.judges.validate import graded_items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--items", type=int, default=16, help="judged items per setting")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--reasoning", action="store_true", help="also time the explain-first form")
    args = ap.parse_args()
    items = graded_items(math_contrasts(args.items, seed=1), "single")[: args.items]
    gen = GeneratorConfig(model=args.model)
    base = JudgeModel(JudgeConfig(generator=gen)).generator  # loaded once, shared
    settings = {"batch 1": JudgeConfig(generator=gen, batch_size=1),
                "batch 8": JudgeConfig(generator=gen, batch_size=8)}  # fmt: skip
    if args.reasoning:
        settings["batch 8, reasoning"] = JudgeConfig(generator=gen, batch_size=8, reasoning=True)
    best: dict[str, float] = {}
    parsed: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, cfg in settings.items():
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                judged = run_judge("single", JudgeModel(cfg, base), items, Path(tmp) / "j.jsonl",
                                   progress=False)  # fmt: skip
                rate = len(items) / (time.perf_counter() - t0)
            best[name] = max(best.get(name, 0.0), rate)
            parsed[name] = judged.parse_rate
    print(f"{args.model}, {len(items)} GSM8K answers judged (`single`), best of {args.repeats}:")
    for name, rate in best.items():
        print(f"  {name:<20} {rate:6.3f} items/s   parse rate {parsed[name]:.0%}")
    print(f"  batch 8 / batch 1: {best['batch 8'] / best['batch 1']:.2f}x")


if __name__ == "__main__":
    main()
