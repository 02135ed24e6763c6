"""`fedloom client CONFIG --client-id I --server H:P`: a Flower SuperNode holding client I's data."""

from __future__ import annotations

import argparse
import sys

HELP = "run a Flower SuperNode holding one client's partition"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (its data and partition define client I)")
    p.add_argument("--client-id", type=int, required=True, help="partition index I")
    p.add_argument("--server", required=True, help="SuperLink HOST:PORT")
    p.add_argument("--certificates", default=None, help="folder with the CA's ca.pem")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for this client's training (default: all cores; set it when several "
        "SuperNodes share a machine, e.g. cores / clients per round)",
    )
    p.add_argument(
        "--train-lock",
        default=None,
        metavar="FILE",
        help="train only while holding an exclusive lock on FILE: SuperNodes on one machine "
        "given the same FILE train one at a time, each with all cores (instead of --threads)",
    )


def main(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.flower import deploy
    from fedloom.settings import ConfigError

    cfg = load_config(args.config)
    from fedloom.flower.simulation import num_clients

    n = num_clients(cfg)
    if not 0 <= args.client_id < n:
        raise ConfigError(
            f"--client-id {args.client_id} is outside the partition: {args.config} splits "
            f"the data into {n} clients, ids 0 to {n - 1}"
        )
    if args.threads is not None and args.threads < 1:
        print("fedloom: --threads must be >= 1", file=sys.stderr)
        return 2
    return deploy.run_client(
        args.config,
        args.client_id,
        args.server,
        args.certificates,
        args.threads,
        args.train_lock,
    )
