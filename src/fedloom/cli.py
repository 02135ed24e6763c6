"""fedloom command line.

fedloom run CONFIG.yaml [--set key=value ...] [--out DIR]
fedloom algorithms          list FL algorithms and their parameters
fedloom data list           list data sources
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedloom", description="Federated LoRA fine-tuning of LLMs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a federated fine-tuning job from a YAML config")
    r.add_argument("config", help="YAML run config (see configs/)")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=3 (repeatable)",
    )
    r.add_argument("--out", default=None, help="output folder (default runs/<config>-<time>)")
    sub.add_parser("algorithms", help="list FL algorithms and their parameters")
    d = sub.add_parser("data", help="data sources")
    d.add_argument("action", choices=["list"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # heavy imports inside main: `fedloom --help` stays instant
    from fedloom.config import ConfigError, load_config

    if args.command == "algorithms":
        from fedloom.algorithms import ALGORITHMS

        for name, cls in sorted(ALGORITHMS.items()):
            params = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
            doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:<11} {json.dumps(params):<70} {doc}")
        return 0
    if args.command == "data":
        from fedloom.data import SOURCES

        for s in SOURCES.values():
            print(
                f"{s.name:<10} {s.domain:<8} {s.file.package}=={s.file.version:<8} {s.license:<36} {s.description}"
            )
        return 0

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"fedloom: config error: {e}", file=sys.stderr)
        return 2
    out = args.out or f"runs/{Path(args.config).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    from fedloom.engine import run

    summary = run(cfg, out)
    base, final = summary["base_eval_loss"], summary["final_eval_loss"]
    print(f"\nheld-out loss   {'domain':<10} {'base':>8} {'final':>8}")
    for k in base:
        print(f"                {k:<10} {base[k]:>8.4f} {final[k]:>8.4f}")
    print(f"wall time {summary['wall_seconds']:.1f}s · outputs in {out}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
