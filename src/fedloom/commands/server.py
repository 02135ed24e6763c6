"""`fedloom server CONFIG [--address H:P] [--certificates DIR] [--out DIR] [--resume]`: a Flower SuperLink running CONFIG."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedloom.commands.common import add_out

HELP = "start a Flower SuperLink and run CONFIG on its SuperNodes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config")
    p.add_argument("--address", default="127.0.0.1:9092", help="HOST:PORT to serve on")
    p.add_argument(
        "--certificates", default=None, help="folder with ca.pem, server.pem, server.key"
    )
    add_out(p, "output folder (default runs/<config>-flower)")
    p.add_argument("--resume", action="store_true", help="continue OUT from its checkpoint")


def main(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.flower import deploy

    load_config(args.config)  # a bad config is one line here, not a failed SuperLink
    out = args.out or f"runs/{Path(args.config).stem}-flower"
    return deploy.serve(args.config, args.address, args.certificates, out, args.resume)
