"""`fedloom models`: the registered models."""

from __future__ import annotations

import argparse

HELP = "list the registered models (generators and trained models)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    from fedloom.models import MODELS

    for name, spec in MODELS.items():
        kind = "chat" if spec.chat else "base"
        print(f"{name:<30} {kind:<5} {spec.licence:<40} {spec.description}")
    return 0
