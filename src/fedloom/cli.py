"""fedloom command line: one module per command in :mod:`fedloom.commands`.

fedloom run CONFIG.yaml [--set key=value ...] [--out DIR]
fedloom eval --model NAME [--adapter DIR] --suite SUITE [--limit N] [--out FILE]
fedloom pipeline CONFIG [--set key=value ...] [--out DIR]       u2s, knowledgesg, fedgc, safety
fedloom bench CONFIG [--set key=value ...] [--out DIR]          the FedLLM-Bench grid
fedloom audit CONFIG [--out DIR]                                canary privacy audit
fedloom data list | show NAME | split CONFIG | stats FEDERATION
fedloom server CONFIG [--address HOST:PORT] [--certificates DIR]   Flower SuperLink + run
fedloom client CONFIG --client-id I --server HOST:PORT               Flower SuperNode
fedloom certs DIR [--host H]  self-signed CA + server certificate for trying TLS
fedloom algorithms | models   what is registered (models --path NAME: a model's local folder)
fedloom export RUN_DIR --out DIR [--merged] [--dtype fp32|bf16]   portable adapter / merged model
"""

from __future__ import annotations

import argparse
import sys

from fedloom.commands import COMMANDS

__all__ = ["main", "make_parser"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedloom", description="Federated LoRA fine-tuning of LLMs.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.HELP))
    return p


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: a :class:`~fedloom.errors.FedloomError` (anything the user can
    fix) becomes one line on stderr and exit status 2; any other exception is a bug and keeps
    its traceback."""
    args = make_parser().parse_args(argv)
    import shlex

    from fedloom import utils

    utils.INVOKED = "fedloom " + shlex.join(sys.argv[1:] if argv is None else argv)
    # heavy imports inside the commands: `fedloom --help` stays instant
    from fedloom.errors import FedloomError
    from fedloom.settings import ConfigError

    try:
        return int(COMMANDS[args.command].main(args))
    except FedloomError as e:
        what = "config error: " if isinstance(e, ConfigError) else ""
        message = " ".join(line.strip() for line in str(e).splitlines())
        print(f"fedloom: {what}{message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
