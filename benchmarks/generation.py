"""Generation throughput: the local backend against a bare `model.generate` loop, batch 16 vs
batch 1, bf16 vs fp32 weights.

    python benchmarks/generation.py                                   # SmolLM2, 16 prompts
    python benchmarks/generation.py --model qwen2.5-coder-1.5b-instruct --prompts 8

Same prompts (Alpaca instructions), greedy, `--new` new tokens. Tokens/s counts generated tokens
up to each sequence's end. The local backend and the bare loop run interleaved (`--repeats`
times each, best kept: this machine's speed drifts). Targets: local / bare >= 0.95 (the backend
adds nothing); batch-16 / batch-1 and bf16 / fp32 are reported.
"""

from __future__ import annotations

import argparse
import time

import torch

from fedloom.config import ModelConfig
from fedloom.data import load_source
from fedloom.data.template import chat_prompt
from fedloom.generation import GenerationConfig, LocalGenerator
from fedloom.models import load_model, weights_dtype
from fedloom.models.loader import load_tokenizer


@torch.no_grad()
def bare(model, tok, texts: list[str], batch: int, new: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    tokens, t0 = 0, time.perf_counter()
    side, tok.padding_side = tok.padding_side, "left"
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, max_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id
        )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            tokens += row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
    tok.padding_side = side
    return tokens, time.perf_counter() - t0


def local(gen: LocalGenerator, prompts: list[str], batch: int, new: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    outs = gen.generate(prompts, GenerationConfig(max_new_tokens=new, batch_size=batch))
    return sum(g[0].tokens for g in outs), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    prompts = [r.prompt() for r in load_source("alpaca_en")[: args.prompts]]
    tok = load_tokenizer(args.model)
    mcfg = ModelConfig(name=args.model)
    dtype = weights_dtype(torch.device("cpu"))
    model = load_model(mcfg, tok, dtype=dtype).model
    gen = LocalGenerator(model, tok, torch.device("cpu"), args.model)
    texts = [chat_prompt(tok, p) for p in prompts]
    local(gen, prompts[:2], 2, 8)  # warm-up: first-call kernels out of the timings

    print(
        f"{args.model}, {len(prompts)} prompts, {args.new} new tokens, weights {dtype}", flush=True
    )
    best: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved: drift hits both alike
        for name, fn in (
            ("bare b8", lambda: bare(model, tok, texts, 8, args.new)),
            ("local b8", lambda: local(gen, prompts, 8, args.new)),
            ("local b16", lambda: local(gen, prompts, 16, args.new)),
            ("local b1", lambda: local(gen, prompts, 1, args.new)),
        ):
            n, s = fn()
            best[name] = max(best.get(name, 0.0), n / s)
            print(f"  ({name}: {n} tokens in {s:.1f} s)", flush=True)
    if dtype == torch.bfloat16:
        fp32 = load_model(mcfg, tok, dtype=torch.float32).model
        g32 = LocalGenerator(fp32, tok, torch.device("cpu"), args.model)
        n, s = local(g32, prompts, 8, args.new)
        best["local b8 fp32"] = n / s
    for name, v in best.items():
        print(f"  {name:<14} {v:8.1f} tok/s")
    ratio = best["local b8"] / best["bare b8"]
    print(
        f"local / bare (batch 8): {ratio:.3f}  (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
    )
    print(f"batch 16 / batch 1: {best['local b16'] / best['local b1']:.2f}x")
    if "local b8 fp32" in best:
        print(f"bf16 / fp32 weights (batch 8): {best['local b8'] / best['local b8 fp32']:.2f}x")


if __name__ == "__main__":
    main()
