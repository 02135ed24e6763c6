"""Generation throughput: the local backend against a bare `model.generate` loop, batch 16 vs
batch 1, bf16 vs fp32 weights, and the onnx backend (ONNX Runtime GenAI) against the local one.

    python benchmarks/generation.py                                   # SmolLM2, 16 prompts
    python benchmarks/generation.py --model qwen2.5-coder-1.5b-instruct --prompts 8
    python benchmarks/generation.py --onnx int4,int8 --skip-bare       # onnx vs local

Same prompts (Alpaca instructions), greedy, `--new` new tokens. Tokens/s counts generated tokens
up to each sequence's end. The local backend and the bare loop run interleaved (`--repeats`
times each, best kept: this machine's speed drifts). Targets: local / bare >= 0.95 (the backend
adds nothing); batch-16 / batch-1 and bf16 / fp32 are reported. For onnx, also how far its greedy
answers drift from the local backend's (re-quantised weights): identical answers and the mean
character similarity (difflib ratio).
"""

from __future__ import annotations

import argparse
import difflib
import time

import torch

from fedloom.config import ModelConfig
from fedloom.data import load_source
from fedloom.data.template import chat_prompt
from fedloom.generation import GenerationConfig, LocalGenerator, TextGenerator
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


ANSWERS: dict[str, list[str]] = {}


def local(gen: TextGenerator, prompts: list[str], batch: int, new: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    outs = gen.generate(prompts, GenerationConfig(max_new_tokens=new, batch_size=batch))
    ANSWERS[gen.name] = [g[0].text for g in outs]
    return sum(g[0].tokens for g in outs), time.perf_counter() - t0


def onnx_generators(model: str, precisions: list[str]) -> dict[str, TextGenerator]:
    from fedloom.generation.onnx_backend import OnnxGenerator, build_onnx
    from fedloom.models.loader import hf_folder

    tok = load_tokenizer(model)
    out: dict[str, TextGenerator] = {}
    for p in precisions:
        t0 = time.perf_counter()
        folder = build_onnx(hf_folder(model), p)
        print(f"onnx {p}: {folder} (ready in {time.perf_counter() - t0:.0f} s)", flush=True)
        out[f"onnx {p}"] = OnnxGenerator(folder, tok, name=f"onnx {p}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--onnx", default="", help="onnx precisions to compare, e.g. int4,int8")
    ap.add_argument("--skip-bare", action="store_true", help="only the backends (faster)")
    args = ap.parse_args()
    prompts = [r.prompt() for r in load_source("alpaca_en")[: args.prompts]]
    tok = load_tokenizer(args.model)
    mcfg = ModelConfig(name=args.model)
    dtype = weights_dtype(torch.device("cpu"))
    model = load_model(mcfg, tok, dtype=dtype).model
    gen = LocalGenerator(model, tok, torch.device("cpu"), "local")
    texts = [chat_prompt(tok, p) for p in prompts]
    onnx = onnx_generators(args.model, [p for p in args.onnx.split(",") if p])
    for g in [gen, *onnx.values()]:
        local(g, prompts[:2], 2, 8)  # warm-up: first-call kernels out of the timings

    print(
        f"{args.model}, {len(prompts)} prompts, {args.new} new tokens, weights {dtype}", flush=True
    )
    best: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved: drift hits both alike
        runs = [
            ("bare b8", lambda: bare(model, tok, texts, 8, args.new)),
            ("local b8", lambda: local(gen, prompts, 8, args.new)),
            ("local b16", lambda: local(gen, prompts, 16, args.new)),
            ("local b1", lambda: local(gen, prompts, 1, args.new)),
        ]
        if args.skip_bare:
            runs = [r for r in runs if r[0] == "local b8"]
        for name, og in onnx.items():
            runs.append((f"{name} b8", lambda og=og: local(og, prompts, 8, args.new)))
            runs.append((f"{name} b1", lambda og=og: local(og, prompts, 1, args.new)))
        for name, fn in runs:
            n, s = fn()
            best[name] = max(best.get(name, 0.0), n / s)
            print(f"  ({name}: {n} tokens in {s:.1f} s)", flush=True)
    if dtype == torch.bfloat16 and not args.skip_bare:
        fp32 = load_model(mcfg, tok, dtype=torch.float32).model
        g32 = LocalGenerator(fp32, tok, torch.device("cpu"), args.model)
        n, s = local(g32, prompts, 8, args.new)
        best["local b8 fp32"] = n / s
    for name, v in best.items():
        print(f"  {name:<14} {v:8.1f} tok/s")
    if "bare b8" in best:
        ratio = best["local b8"] / best["bare b8"]
        met = "met" if ratio >= 0.95 else "NOT met"
        print(f"local / bare (batch 8): {ratio:.3f}  (target >= 0.95: {met})")
        print(f"batch 16 / batch 1: {best['local b16'] / best['local b1']:.2f}x")
    for name in onnx:
        ref, got = ANSWERS["local"], ANSWERS[name]
        same = sum(a == b for a, b in zip(ref, got, strict=True))
        sim = sum(
            difflib.SequenceMatcher(None, a, b).ratio() for a, b in zip(ref, got, strict=True)
        ) / len(ref)
        print(
            f"{name} / local: batch 8 {best[f'{name} b8'] / best['local b8']:.2f}x"
            + (
                f", batch 1 {best[f'{name} b1'] / best['local b1']:.2f}x"
                if "local b1" in best
                else ""
            )
            + f"; answers identical {same}/{len(ref)}, mean similarity {sim:.2f}"
        )
        print(f"  e.g. local: {ref[0][:120]!r}\n       {name}: {got[0][:120]!r}")
    if "local b8 fp32" in best:
        print(f"bf16 / fp32 weights (batch 8): {best['local b8'] / best['local b8 fp32']:.2f}x")


if __name__ == "__main__":
    main()
