"""`fedloom certs DIR [--host H]`: a self-signed CA and server certificate for trying TLS."""

from __future__ import annotations

import argparse

HELP = "create a self-signed CA + server certificate (for trying TLS)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory")
    p.add_argument("--host", action="append", default=[], help="server IP or name (repeatable)")


def main(args: argparse.Namespace) -> int:
    from fedloom.flower import deploy

    for path in deploy.make_certs(args.directory, args.host):
        print(f"wrote {path}")
    print("SuperLink: --certificates DIR; SuperNodes need DIR/ca.pem (copy it to them)")
    return 0
