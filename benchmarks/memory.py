"""Memory across rounds: a real federated run (the OpenFedLLM comparison's workload: SmolLM2-135M,
LoRA r 16 on q/v, 2 clients x 5 steps x batch 4, <= 256 tokens) for ``--rounds`` rounds at each
precision, each in a fresh ``fedloom run`` process; prints the resident memory after every round
and the peak, from ``metrics.jsonl`` and ``summary.json``.

    python benchmarks/memory.py [--rounds 20] [--precisions auto fp32]

Targets (issue #32): no growth across rounds (the training peak after the last round equals the
peak after round 3), the final evaluation within the training peak, the defaults' peak <= 3.1 GiB
(1.5x OpenFedLLM's 2.1 GiB on this workload).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = [
    "lora.target_modules=[q_proj,v_proj]",
    "lora.dropout=0.05",
    "data.max_seq_len=256",
    "partition.num_clients=2",
    "federation.sample_clients=2",
    "eval.suites=[]",
    "eval.sample_prompts=0",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--precisions", nargs="+", default=["auto", "fp32"])
    ap.add_argument("--set", action="append", default=[], help="more config overrides")
    args = ap.parse_args()
    for precision in args.precisions:
        with tempfile.TemporaryDirectory() as tmp:
            sets = [*WORKLOAD, f"federation.rounds={args.rounds}", f"model.precision={precision}"]
            cmd = [
                str(Path(sys.executable).parent / "fedloom"),
                "run",
                str(ROOT / "configs" / "demo.yaml"),
                "--out",
                tmp,
                *[a for s in [*sets, *args.set] for a in ("--set", s)],
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"{precision}: fedloom run failed\n{proc.stderr[-2000:]}")
                continue
            rows = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
            summary = json.loads((Path(tmp) / "summary.json").read_text())
        peaks = [r["peak_rss_gib"] for r in rows]
        at3 = peaks[min(2, len(peaks) - 1)]
        grew = peaks[-1] - at3
        print(
            f"precision {precision} ({summary['precision']}), {len(rows)} rounds, "
            f"{summary['train_seconds'] / len(rows):.1f} s/round"
        )
        print("  RSS after each round (GiB): " + " ".join(f"{r['rss_gib']:.2f}" for r in rows))
        print("  peak so far (GiB):          " + " ".join(f"{p:.2f}" for p in peaks))
        print(
            f"  training peak after round 3 {at3:.2f}, after round {len(rows)} {peaks[-1]:.2f}: "
            f"{'no growth' if grew <= 0.02 else f'GREW {grew:+.2f} GiB'} (target: no growth)"
        )
        final = summary["peak_rss_gib"]
        print(
            f"  whole run peak (final evaluation included) {final:.2f} GiB: the final "
            f"evaluation {'stays within' if final <= peaks[-1] + 0.02 else 'ADDS'} "
            f"{max(0.0, final - peaks[-1]):.2f} GiB; target <= 3.1 GiB: "
            f"{'met' if final <= 3.1 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
