"""`fedloom audit CONFIG`: plant canaries, train without and with DP, measure exposure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedloom.commands.common import add_out, add_set

HELP = "privacy audit: plant canaries in one client, train without DP / with client DP at each ε / with central DP, measure exposure and extraction"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (its `privacy` section is replaced per setting)")
    add_out(p, "output folder (default runs/<config>-audit)")
    add_set(p)
    p.add_argument(
        "--epsilon",
        type=float,
        action="append",
        default=None,
        help="client DP-SGD target ε per setting (repeatable; default 8 and 2)",
    )
    p.add_argument(
        "--central-noise",
        type=float,
        default=1.0,
        help="central DP noise multiplier σ (default 1.0; 0 to leave central DP out)",
    )
    p.add_argument(
        "--central-clip",
        type=float,
        default=None,
        help="central DP clip norm C (default: the median client update norm of the no-DP run)",
    )
    p.add_argument("--canaries", type=int, default=3, help="secrets planted (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="copies of each (default 10)")
    p.add_argument("--digits", type=int, default=6, help="digits per secret (default 6)")
    p.add_argument(
        "--candidates", type=int, default=200, help="random secrets ranked against each (200)"
    )
    p.add_argument("--client", type=int, default=0, help="the client holding the canaries")


def main(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.privacy.audit import default_settings, run_audit

    for name in ("canaries", "repeats", "digits", "candidates"):
        if getattr(args, name) < 1:
            print(f"fedloom: --{name} must be >= 1", file=sys.stderr)
            return 2
    if args.central_noise < 0 or (args.central_clip is not None and args.central_clip <= 0):
        print("fedloom: --central-noise must be >= 0 and --central-clip > 0", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        settings = default_settings(
            args.epsilon or [8.0, 2.0], args.central_noise or None, args.central_clip
        )
        out = args.out or f"runs/{Path(args.config).stem}-audit"
        rows = run_audit(
            cfg,
            out,
            settings,
            args.canaries,
            args.repeats,
            args.digits,
            args.candidates,
            args.client,
        )
    except ValueError as e:  # the audit's own argument checks
        print(f"fedloom: {e}", file=sys.stderr)
        return 2
    from fedloom.privacy.audit import table_markdown

    print(Path(out, "audit.md").read_text() if rows else table_markdown([], {}))
    print(f"outputs in {out}/ (audit.json, audit.md, audit.png, one run folder per setting)")
    return 0
