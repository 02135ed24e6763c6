"""Local-training throughput: fedloom's LocalTrainer vs a bare PyTorch + PEFT loop.

Both train the same LoRA adapter (same init) on the same batches, same precision, in this process,
alternating so machine noise hits both. Prints tokens/s of each, their ratio (target >= 0.95), and
model FLOPs utilisation against a matmul peak measured in the same run.

    python benchmarks/train_throughput.py [--model smollm2-135m-instruct] [--steps 6] [--precision auto]
    python benchmarks/train_throughput.py --packing [--steps 10 --batch 4 --seq 256]

`--packing`: padding-free training on the demo workload (Alpaca instructions, batch 4, at most
256 tokens): the same micro-batches as issue #21 measured them (padded rows, logits at every
position), padded with response-only logits, and packed into one row with response-only logits
(today's default), interleaved from the same adapter init; real (non-padding) tokens/s of each,
the ratios (target >= 1.3 over `before`), the share of padding, and the held-out loss after the
same steps with each (must match within noise: neither change may alter what is learned).

FLOPs model: a LoRA step costs ~4·N FLOPs per input token (forward 2N + backward activation
gradients 2N; the frozen base computes no weight gradients), N = base parameters excluding the
embedding table (its lookup is free) — lm_head counted.
"""

from __future__ import annotations

import argparse
import time

import torch

from fedloom.config import LoraSettings, ModelConfig, TrainConfig
from fedloom.data import collate
from fedloom.data.template import TokenizedExample
from fedloom.models import attach_lora, get_adapter_state, load_model, set_adapter_state
from fedloom.models.loader import cpu_has_bf16
from fedloom.train import LocalTrainer
from fedloom.utils import rng_for


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def matmul_params(model) -> int:  # type: ignore[no-untyped-def]
    """N of the FLOPs model: the base's parameters without the embedding lookup (free) and the
    LoRA weights, the LM head counted even when it shares the embedding matrix (a real matmul)."""
    n = sum(
        p.numel()
        for name, p in model.named_parameters()
        if "embed_tokens" not in name and "lora_" not in name
    )
    if model.config.tie_word_embeddings:
        n += model.get_input_embeddings().weight.numel()
    return n


def synthetic_batches(vocab: int, steps: int, batch: int, seq: int) -> list[TokenizedExample]:
    rng = rng_for(0, "bench")
    out = []
    for _ in range(steps * batch):
        ids = [rng.randrange(vocab) for _ in range(seq)]
        out.append(TokenizedExample(ids, [-100] * (seq // 2) + ids[seq // 2 :], False))
    return out


def bare_loop(model, examples, cfg: TrainConfig, pad: int, autocast_dtype) -> float:  # type: ignore[no-untyped-def]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    t = time.perf_counter()
    for i in range(0, len(examples), cfg.batch_size):
        batch = collate(examples[i : i + cfg.batch_size], pad)
        with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(**batch).loss
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def packing_comparison(args: argparse.Namespace) -> None:
    from fedloom.data import load_source
    from fedloom.data.template import tokenize_example
    from fedloom.eval.heldout import example_losses
    from fedloom.train.objectives import SFTObjective

    loaded = load_model(ModelConfig(name=args.model, precision=args.precision))
    model = attach_lora(loaded.model, LoraSettings(r=16, alpha=32, dropout=0.0))
    init = get_adapter_state(model)
    tok, pad = loaded.tokenizer, int(loaded.tokenizer.pad_token_id)
    records = load_source("alpaca_en")
    order = list(range(len(records)))
    rng_for(0, "bench-packing").shuffle(order)
    tokenized = [tokenize_example(tok, records[i], args.seq) for i in order]
    usable = [e for e in tokenized if e is not None]
    n = args.steps * args.batch
    train, heldout = usable[:n], usable[n : n + 48]
    cfg = TrainConfig(local_steps=args.steps, batch_size=args.batch, lr=2e-4)

    class FullLogitsSFT(SFTObjective):
        """The objective as issue #21 measured it: padded rows, the LM head and the
        cross-entropy over every position (transformers' own loss)."""

        def loss(self, model, batch, dtype):  # type: ignore[no-untyped-def]
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                return model(**batch, use_cache=False).loss.float()

    objectives = {
        "before": FullLogitsSFT(),  # padded, full logits: the default when #21 was filed
        "padded": SFTObjective(),  # padded, response-only logits
        "packed": SFTObjective(packed=True),  # packed, response-only logits: today's default
    }
    models = {name: model for name in objectives}
    trainers = {
        name: LocalTrainer(models[name], cfg, pad, loaded.device, loaded.autocast_dtype, obj)
        for name, obj in objectives.items()
    }
    real = sum(len(e.input_ids) for e in train)
    padded_tokens = sum(
        args.batch * max(len(e.input_ids) for e in train[i : i + args.batch])
        for i in range(0, n, args.batch)
    )
    for name, trainer in trainers.items():  # warm-up
        set_adapter_state(models[name], init)
        trainer.train(train[: args.batch], cfg.lr, steps=1)
    best: dict[str, float] = {}
    after: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # interleaved: drift hits both alike
        for name, trainer in trainers.items():
            set_adapter_state(models[name], init)
            res = trainer.train(train, cfg.lr, seed=0)
            best[name] = min(best.get(name, float("inf")), res.seconds)
            after[name] = example_losses(
                models[name], heldout, pad, loaded.device, loaded.autocast_dtype
            )
    prec = str(loaded.autocast_dtype or "fp32").replace("torch.", "")
    print(f"model {args.model}  precision {prec}  threads {torch.get_num_threads()}")
    print(
        f"demo workload: Alpaca, {args.steps} steps x batch {args.batch}, <= {args.seq} tokens; "
        f"{real} real tokens, {padded_tokens} when padded ({100 * (1 - real / padded_tokens):.1f}% "
        f"padding); best of {args.repeats}, interleaved"
    )
    for name in trainers:
        print(
            f"  {name:7s}: {real / best[name]:8.1f} real tokens/s   ({best[name] / args.steps:.2f} s/step)"
        )
    ratio = best["before"] / best["packed"]
    print(
        f"packed / before real tokens/s: {ratio:.2f}x  (target >= 1.3: {'met' if ratio >= 1.3 else 'NOT met'}); "
        f"response-only logits alone {best['before'] / best['padded']:.2f}x, packing on top "
        f"{best['padded'] / best['packed']:.2f}x"
    )
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    step_s: dict[bool, float] = {}
    for fused in (False, True, False, True):
        opt = torch.optim.AdamW(params, lr=1e-9, fused=fused)
        opt.step()
        t = time.perf_counter()
        for _ in range(20):
            opt.step()
        step_s[fused] = min(step_s.get(fused, 1e9), (time.perf_counter() - t) / 20)
    model.zero_grad(set_to_none=True)
    print(
        f"AdamW step on the {sum(p.numel() for p in params) / 1e6:.2f}M LoRA parameters: "
        f"foreach {1e3 * step_s[False]:.1f} ms, fused {1e3 * step_s[True]:.1f} ms "
        f"({100 * step_s[False] / (best['packed'] / args.steps):.2f}% of a packed step)"
    )
    set_adapter_state(model, init)
    means = {k: sum(v) / len(v) for k, v in after.items()}
    diffs = [
        abs(a - b)
        for k in ("padded", "packed")
        for a, b in zip(after[k], after["before"], strict=True)
    ]
    print(
        f"held-out loss after training ({len(heldout)} examples): "
        + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
        + f"; largest per-example difference from before {max(diffs):.2e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--packing", action="store_true", help="padded vs packed, demo workload")
    args = ap.parse_args()
    if args.packing:
        packing_comparison(args)
        return

    loaded = load_model(ModelConfig(name=args.model, precision=args.precision))
    model = attach_lora(loaded.model, LoraSettings(r=16, alpha=32, dropout=0.0))
    init = get_adapter_state(model)
    cfg = TrainConfig(local_steps=args.steps, batch_size=args.batch, lr=1e-4)
    pad = int(loaded.tokenizer.pad_token_id)
    examples = synthetic_batches(len(loaded.tokenizer), args.steps, args.batch, args.seq)
    trainer = LocalTrainer(model, cfg, pad, loaded.device, loaded.autocast_dtype)
    tokens = args.steps * args.batch * args.seq

    # warm-up (allocator, kernels), then alternate the two loops
    set_adapter_state(model, init)
    trainer.train(examples[: args.batch], cfg.lr, steps=1)
    t_fed, t_bare = [], []
    for _ in range(args.repeats):
        set_adapter_state(model, init)
        t_fed.append(trainer.train(examples, cfg.lr).seconds)
        set_adapter_state(model, init)
        t_bare.append(bare_loop(model, examples, cfg, pad, loaded.autocast_dtype))
    fed_tps, bare_tps = tokens / min(t_fed), tokens / min(t_bare)

    n_params = matmul_params(model)
    peak_dtype = loaded.autocast_dtype or torch.float32
    peak = matmul_peak(peak_dtype)
    native_bf16 = loaded.device.type == "cuda" or cpu_has_bf16()
    # without native bf16 the CPU emulates it (~50x slower than fp32 here): probe a small matrix
    small = 2048 if native_bf16 else 512
    peak_bf16 = peak if peak_dtype == torch.bfloat16 else matmul_peak(torch.bfloat16, n=small)
    mfu = 4 * n_params * fed_tps / peak
    prec = str(loaded.autocast_dtype or "fp32").replace("torch.", "")
    print(
        f"model {args.model}  precision {prec}  device {loaded.device}  threads {torch.get_num_threads()}"
    )
    print(f"batch {args.batch}x{args.seq} tokens, {args.steps} steps, best of {args.repeats}")
    print(
        f"fedloom LocalTrainer : {fed_tps:8.1f} tokens/s   ({min(t_fed) / args.steps:.2f} s/step)"
    )
    print(
        f"bare PyTorch + PEFT  : {bare_tps:8.1f} tokens/s   ({min(t_bare) / args.steps:.2f} s/step)"
    )
    print(
        f"ratio fedloom/bare   : {fed_tps / bare_tps:.3f}   (target >= 0.95: {'met' if fed_tps / bare_tps >= 0.95 else 'NOT met'})"
    )
    print(
        f"matmul peak {prec}: {peak / 1e9:.1f} GFLOP/s; bf16 matmul: {peak_bf16 / 1e9:.1f} GFLOP/s "
        f"({'native' if native_bf16 else 'emulated: no AVX512-BF16/AMX, so precision auto = fp32'})"
    )
    print(
        f"model FLOPs utilisation: {100 * mfu:.1f}% of the {prec} peak (4·N·tokens, N={n_params / 1e6:.1f}M)"
    )


if __name__ == "__main__":
    main()
