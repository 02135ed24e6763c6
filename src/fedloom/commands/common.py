"""What every command shares: the same flags for the same things."""

from __future__ import annotations

import argparse


def add_set(p: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable): override a config value."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=3 (repeatable)",
    )


def add_out(p: argparse.ArgumentParser, help: str) -> None:
    """`--out DIR`: where a command that writes puts its outputs."""
    p.add_argument("--out", default=None, help=help)


def with_out(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--out DIR`` as the config's ``out`` (for configs that name their
    own output folder: pipelines and the bench)."""
    return [*args.overrides, *([f"out={args.out}"] if args.out else [])]
