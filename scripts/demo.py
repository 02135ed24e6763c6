"""`make demo`: federated fine-tuning of SmolLM2-135M-Instruct by 4 clients, then the result.

Runs configs/demo.yaml into runs/demo and prints the base vs federated held-out loss per domain
and sample answers before and after.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from fedloom.config import load_config
    from fedloom.engine import run

    console = Console()
    cfg = load_config(ROOT / "configs" / "demo.yaml", sys.argv[1:])
    out = ROOT / "runs" / "demo"
    console.rule("fedloom demo: SmolLM2-135M-Instruct, 4 clients, FedAvg, Alpaca + GSM8K")
    s = run(cfg, out, console=console)

    table = Table(title="held-out loss per response token (lower is better)")
    for col in ("domain", "base model", "federated", "change"):
        table.add_column(col, justify="right")
    for dom, base in s["base_eval_loss"].items():
        fin = s["final_eval_loss"][dom]
        table.add_row(dom, f"{base:.4f}", f"{fin:.4f}", f"{100 * (fin - base) / base:+.1f}%")
    console.print(table)
    if s["benchmarks"]:
        bench = Table(title="benchmark suites (same fixed-seed items before and after)")
        for col in ("suite", "n", "metric", "base model", "federated", "95% CI (federated)"):
            bench.add_column(col, justify="right")
        for name, b in s["benchmarks"].items():
            key = "safety_rate" if "safety_rate" in b["base"] else "accuracy"
            f = b["final"]
            bench.add_row(
                name,
                str(b["n"]),
                key,
                f"{b['base'][key]:.3f}",
                f"{f[key]:.3f}",
                f"[{f['ci95_low']:.3f}, {f['ci95_high']:.3f}]",
            )
        console.print(bench)
    for smp in s["samples"]:
        console.rule(f"sample ({smp['domain']})")
        console.print(f"[bold]prompt:[/bold] {smp['prompt'][:400]}")
        console.print(f"[bold]base:[/bold] {smp['base']}")
        console.print(f"[bold]federated:[/bold] {smp['final']}")
    console.print(
        f"\n{s['rounds']} rounds, {s['num_clients']} clients, precision {s['precision']}, "
        f"{(s['bytes_up_total'] + s['bytes_down_total']) / 1e6:.1f} MB exchanged, "
        f"wall time {s['wall_seconds']:.0f}s. Outputs: {out}/"
    )
    improved = all(s["final_eval_loss"][d] < s["base_eval_loss"][d] for d in s["base_eval_loss"])
    return 0 if improved else 1


def cli() -> int:
    """`make demo [ARGS]`: extra arguments are `key=value` config overrides (as `--set`)."""
    from fedloom.errors import FedloomError

    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__ or "", "\nusage: python scripts/demo.py [key=value ...]", sep="")
        return 0
    try:
        return main()
    except FedloomError as e:
        print(f"fedloom demo: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
