"""Generation on the U2S workload: prefill and decode throughput as a share of the bf16 matmul
peak, and what reusing a batch's shared prompt prefix (the local backend's KV prefix reuse)
saves on FedIT-U2S's real prompts.

    python benchmarks/generation_prefix.py [--prompts 8 --new 64 --batch 8]

1. Builds the U2S pipeline's prompts from configs/u2s.yaml (data + selection stages, seed 0,
   all 120 pieces) for each selection (retrieval, random, fixed) and counts, under the backend's
   batching (longest first, ``--batch`` per batch), the prompt tokens that prefix reuse does not
   prefill again: the upper bound of what it can save on that stage's prefill.
2. Times Qwen2.5-Coder-1.5B-Instruct (the U2S generator, bf16 weights) on the first
   ``--prompts`` retrieval prompts, greedy, ``--new`` new tokens, with and without reuse
   (interleaved, best of ``--repeats``): the same tokens must come out (exactness), and the wall
   time ratio is the stage's gain (target >= 2x or the reason it cannot be). Prefill alone
   (``max_new_tokens 1``) gives prefill tokens/s; decode tokens/s is the rest. Shares of the peak:
   prefill 2·N FLOPs per prompt token, decode 2·N per generated token (decode is bound by reading
   the weights, so its GB/s of weights read is printed too).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from train_throughput import matmul_params, matmul_peak

from fedloom.embed import get_embedder
from fedloom.generation import GenerationConfig, LocalGenerator
from fedloom.generation.local import shared_prefix
from fedloom.models import load_model, weights_dtype
from fedloom.models.loader import load_tokenizer
from fedloom.pipeline.runner import load_pipeline_config
from fedloom.settings import ModelConfig
from fedloom.synth.u2s.data import build_data
from fedloom.synth.u2s.prompt import build_prompt
from fedloom.synth.u2s.retrieval import select_examples
from fedloom.utils import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def u2s_prompts(selection: str, tok, folder: Path) -> list[str]:  # type: ignore[no-untyped-def]
    cfg = load_pipeline_config(ROOT / "configs" / "u2s.yaml")
    p = dataclasses.replace(cfg.params, selection=selection)
    if not (folder / "pieces.jsonl").exists():
        build_data(p, 0, lambda s: len(tok(s, add_special_tokens=False)["input_ids"]), folder)
    pieces, pool = read_jsonl(folder / "pieces.jsonl"), read_jsonl(folder / "pool.jsonl")
    pe = ve = None
    if selection == "retrieval":
        emb = get_embedder(p.embedder, [x["text"] for x in pool + pieces])
        pe, ve = emb.encode([x["text"] for x in pieces]), emb.encode([x["text"] for x in pool])
    idx, _ = select_examples(selection, p.k, 0, len(pieces), len(pool), pe, ve)
    return [
        build_prompt(x["text"], [pool[j] for j in i], p.example_words)
        for x, i in zip(pieces, idx, strict=True)
    ]


def shared_share(ids: list[list[int]], batch: int) -> tuple[int, int]:
    """(prompt tokens reuse skips, all prompt tokens) under longest-first batching."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    saved = 0
    for s in range(0, len(order), batch):
        rows = [ids[i] for i in order[s : s + batch]]
        saved += shared_prefix(rows) * (len(rows) - 1)
    return saved, sum(len(r) for r in ids)


def any_prefix(ids: list[list[int]]) -> int:
    """Prompt tokens a cache of every prefix seen so far would skip (a token trie over the
    whole job): all tokens less the trie's nodes."""
    rows = sorted(ids)
    nodes = len(rows[0])
    for a, b in zip(rows, rows[1:], strict=False):
        common = 0
        while common < min(len(a), len(b)) and a[common] == b[common]:
            common += 1
        nodes += len(b) - common
    return sum(len(r) for r in ids) - nodes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--shares-only", action="store_true", help="part 1 only (no model)")
    args = ap.parse_args()

    peak = matmul_peak(torch.bfloat16, reps=10)  # before the model takes memory, and below
    tok = load_tokenizer(args.model, need_chat=False)
    folder = Path(tempfile.mkdtemp(prefix="u2s-prompts-"))
    probe = LocalGenerator(torch.nn.Identity(), tok, torch.device("cpu"))  # type: ignore[arg-type]
    texts: dict[str, list[str]] = {}
    for selection in ("retrieval", "random", "fixed"):
        texts[selection] = [probe.render(t, True) for t in u2s_prompts(selection, tok, folder)]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[selection]]
        saved, total = shared_share(ids, args.batch)
        trie = any_prefix(ids)
        print(
            f"U2S prompts, selection {selection:9s}: {len(ids)} prompts, {total / len(ids):.0f} "
            f"tokens each; a batch's shared prefix covers {saved} of {total} prompt tokens "
            f"({saved / total:.1%}) at batch {args.batch}; any prefix shared with any earlier "
            f"prompt (a prefix cache across the whole job, vLLM-style): {trie / total:.1%}"
        )

    if args.shares_only:
        return
    loaded = load_model(ModelConfig(name=args.model), dtype=weights_dtype(torch.device("cpu")))
    model, n_params = loaded.model, matmul_params(loaded.model)
    gen = LocalGenerator(model, tok, loaded.device)
    prompts = texts["retrieval"][: args.prompts]
    prompt_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in prompts)
    full = GenerationConfig(max_new_tokens=args.new, batch_size=args.batch, chat=False)
    one = dataclasses.replace(full, max_new_tokens=1)
    gen.generate(prompts[: args.batch], one)  # warm-up
    best: dict[str, float] = {}
    outs: dict[bool, list[list[int | str]]] = {}
    new_tokens = 0
    for _ in range(args.repeats):
        peak = max(peak, matmul_peak(torch.bfloat16, reps=10))
        for reuse in (False, True):
            gen.reuse_prefix = reuse
            for name, cfg in (("prefill", one), ("generate", full)):
                t0 = time.perf_counter()
                got = gen.generate(prompts, cfg)
                key = f"{name} {'reuse' if reuse else 'whole'}"
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
                if name == "generate":
                    outs[reuse] = [[g[0].text, g[0].tokens] for g in got]
                    new_tokens = sum(g[0].tokens for g in got)
    same = sum(a == b for a, b in zip(outs[False], outs[True], strict=True))
    print(
        f"\n{args.model} (bf16 weights, N {n_params / 1e9:.2f}B), {len(prompts)} retrieval "
        f"prompts ({prompt_tokens} prompt tokens), batch {args.batch}, greedy, {args.new} new "
        f"tokens; bf16 matmul peak {peak / 1e9:.0f} GFLOP/s (same run); best of {args.repeats}"
    )
    pre = best["prefill whole"]
    dec = best["generate whole"] - pre
    pre_tps, dec_tps = prompt_tokens / pre, new_tokens / max(dec, 1e-9)
    print(
        f"  prefill: {pre_tps:.1f} prompt tokens/s = {2 * n_params * pre_tps / peak:.1%} of the "
        f"peak ({pre:.1f} s)"
    )
    steps = -(-len(prompts) // args.batch) * args.new
    if dec <= 0:  # the machine drifted between the two timings: no figure rather than a wrong one
        print(
            f"  decode: not resolved (generation {best['generate whole']:.1f} s took less than "
            f"its prefill alone {pre:.1f} s: drift; use --repeats 2)"
        )
    else:
        print(
            f"  decode: {dec_tps:.1f} new tokens/s = {2 * n_params * dec_tps / peak:.1%} of the "
            f"peak ({dec:.1f} s; weights read {2 * n_params * steps / dec / 1e9:.1f} GB/s)"
        )
    print(
        f"  prefix reuse: prefill {pre:.1f} -> {best['prefill reuse']:.1f} s "
        f"({pre / best['prefill reuse']:.2f}x), whole generation {best['generate whole']:.1f} -> "
        f"{best['generate reuse']:.1f} s ({best['generate whole'] / best['generate reuse']:.2f}x; "
        f"target >= 2x); the same text and token count for {same} of {len(prompts)} prompts"
    )


if __name__ == "__main__":
    main()
