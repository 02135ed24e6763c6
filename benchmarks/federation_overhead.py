"""Share of round wall time spent outside local training (aggregation, encoding and decoding,
adapter copies, checkpointing, orchestration) on real SmolLM2 rounds, in-process engine.

    python benchmarks/federation_overhead.py [--config configs/demo.yaml] [--rounds 2]

A round's wall time and its clients' training time are both measured by the engine
(`seconds`, `client_train_seconds` in metrics.jsonl; evaluation off). Target: <= 3%.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console

from fedloom.config import load_config
from fedloom.engine import run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    over = [
        f"federation.rounds={args.rounds}",
        "eval.every=0",
        "eval.suites=[]",
        "train.local_steps=3",
        "eval.max_examples=4",
        *args.overrides,
    ]
    cfg = load_config(args.config, over)
    out = Path(tempfile.mkdtemp(prefix="fedloom-overhead-"))
    run(cfg, out, console=Console(quiet=True))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    print(
        f"model {cfg.model.name}, {cfg.federation.sample_clients} clients x "
        f"{cfg.train.local_steps} steps per round"
    )
    print(f"{'round':>5} {'wall s':>8} {'training s':>11} {'outside':>8}")
    for r in rows:
        share = 1 - r["client_train_seconds"] / r["seconds"]
        print(
            f"{r['round']:>5} {r['seconds']:>8.2f} {r['client_train_seconds']:>11.2f} {share:>8.2%}"
        )
    wall = sum(r["seconds"] for r in rows)
    share = 1 - sum(r["client_train_seconds"] for r in rows) / wall
    print(
        f"federation overhead {share:.2%} of round wall time "
        f"(target <= 3%: {'met' if share <= 0.03 else 'not met'})"
    )


if __name__ == "__main__":
    main()
