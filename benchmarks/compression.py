"""Update compression: bytes per round and held-out loss after N rounds for each codec.

    python benchmarks/compression.py                        # SmolLM2, demo data, 2 short rounds
    python benchmarks/compression.py --config configs/tiny.yaml --rounds 3

Same config and seed for every mode (none, fp16, int8, topk); prints client->server bytes per
round, their reduction against uncompressed fp32, the final held-out loss and its relative
change against `none`. Target: int8 >= 4x fewer bytes with <= 1% relative change in held-out
loss.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from fedloom.config import load_config
from fedloom.engine import run

ROOT = Path(__file__).resolve().parents[1]
MODES = ("none", "fp16", "int8", "topk")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    base = [f"federation.rounds={args.rounds}", "eval.every=0", "eval.suites=[]"]
    if "demo" in Path(args.config).name:
        base += ["train.local_steps=2", "eval.max_examples=12"]
    work = Path(tempfile.mkdtemp(prefix="fedloom-compression-"))
    results = {}
    for mode in MODES:
        cfg = load_config(args.config, [*base, f"federation.compression={mode}", *args.overrides])
        s = run(cfg, work / mode, console=Console(quiet=True))
        results[mode] = (s["bytes_up_total"] / args.rounds, s["final_eval_loss"]["all"])
        print(
            f"{mode:>5}: {results[mode][0] / 1e6:.3f} MB up per round, held-out loss "
            f"{results[mode][1]:.4f}",
            flush=True,
        )
    ref_bytes, ref_loss = results["none"]
    print(
        f"\nmodel {cfg.model.name}, {args.rounds} rounds, {cfg.federation.sample_clients} "
        f"clients per round, topk fraction {cfg.federation.topk_fraction}"
    )
    print(f"{'mode':>5} {'MB up/round':>12} {'x fewer':>8} {'held-out':>9} {'rel. change':>12}")
    for mode, (b, loss) in results.items():
        print(
            f"{mode:>5} {b / 1e6:>12.3f} {ref_bytes / b:>8.2f} {loss:>9.4f} "
            f"{(loss - ref_loss) / ref_loss:>+12.2%}"
        )
    ib, il = results["int8"]
    ratio, change = ref_bytes / ib, abs(il - ref_loss) / ref_loss
    print(
        f"int8: {ratio:.2f}x fewer bytes (target >= 4: {'met' if ratio >= 4 else 'not met'}), "
        f"{change:.2%} held-out change (target <= 1%: {'met' if change <= 0.01 else 'not met'})"
    )


if __name__ == "__main__":
    main()
