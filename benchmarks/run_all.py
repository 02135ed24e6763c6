"""`make perf`: run every benchmark, print its output and collect it in benchmarks/results.md."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("train_throughput.py",),
    # padded + full logits (before #21) vs packed + response-only logits, demo workload
    ("train_throughput.py", "--packing", "--steps", "10", "--repeats", "2"),
    # issue #32: real tokens/s as a share of the matmul peak (bf16, fp32, checkpointing), profile
    ("train_peak.py", "--profile"),
    # issue #32: memory after every round of a 20-round run, bf16 and fp32
    ("memory.py", "--rounds", "20"),
    # issue #32: prefill / decode as a share of the peak, KV prefix reuse on U2S prompts
    ("generation_prefix.py",),
    ("federation_overhead.py",),
    ("compression.py",),
    ("scale_clients.py",),
    ("generation.py",),
    # a real-model round (SmolLM2, the demo's round: 2 clients x 5 local steps) on both engines,
    # taking the machine in turns round by round (2 clients: both engines fit in memory at once)
    (
        "engine_overhead.py",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--rounds",
        "4",
        "--interleave",
        "--set",
        "eval.max_examples=4",
        "--set",
        "partition.num_clients=2",
    ),
)


def main() -> None:
    parts = [
        f"# fedloom benchmarks\n\n{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}. Each section is a script's own output.\n"
    ]
    for name, *args in SCRIPTS:
        print(f"== {name} {' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / name), *args], capture_output=True, text=True
        )
        out = proc.stdout + (
            f"\n[exit {proc.returncode}]\n{proc.stderr[-2000:]}" if proc.returncode else ""
        )
        print(out, flush=True)
        parts.append(f"## {name} ({time.perf_counter() - t0:.0f} s)\n\n```\n{out.strip()}\n```\n")
    (HERE / "results.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'results.md'}")


if __name__ == "__main__":
    main()
