"""Memory and round time as the federation grows: 10, 100 and 747 clients, 10 sampled per
round, tiny-llama, SCAFFOLD (every sampled client keeps a control variate), real Alpaca + GSM8K.

    python benchmarks/scale_clients.py

Each size runs in its own process; prints peak RSS and mean round wall time per size and the
747/10 RSS ratio (target <= 1.2). Client state lives on disk (`ClientStates`), data shards are
index lists into one tokenised set, so cost follows the sampled clients, not all clients.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10, 100, 747)

CHILD = """
import json, resource, sys
from rich.console import Console
from fedloom.config import load_config
from fedloom.engine import run
n, out = int(sys.argv[1]), sys.argv[2]
cfg = load_config(sys.argv[3], [
    "data.sources=[{name: alpaca_en}, {name: gsm8k}]", "data.heldout=10", "data.max_seq_len=96",
    "partition.strategy=iid", f"partition.num_clients={n}", "partition.min_examples=1",
    "federation.algorithm=scaffold", "federation.rounds=4", "federation.sample_clients=10",
    "train.local_steps=1", "train.batch_size=2", "eval.every=0", "eval.max_examples=4",
])
s = run(cfg, out, console=Console(quiet=True))
rows = [json.loads(x) for x in open(out + "/metrics.jsonl")]
print(json.dumps({
    "clients": n,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "round_seconds": sum(r["seconds"] for r in rows[1:]) / (len(rows) - 1),
    "state_files": len(list((__import__("pathlib").Path(out) / "client_states").glob("*.pt"))),
}))
"""


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="fedloom-scale-"))
    results = []
    for n in SIZES:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(n),
                str(work / str(n)),
                str(ROOT / "configs" / "tiny.yaml"),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{n:>4} clients: peak RSS {r['peak_rss_mb']:.0f} MB, round {r['round_seconds']:.2f} s, "
            f"{r['state_files']} client-state files on disk",
            flush=True,
        )
    ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    t_ratio = results[-1]["round_seconds"] / results[0]["round_seconds"]
    print(
        f"747 vs 10 clients: peak RSS x{ratio:.3f} (target <= 1.2: "
        f"{'met' if ratio <= 1.2 else 'not met'}), round time x{t_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
