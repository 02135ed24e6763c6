"""`fedloom algorithms`: the FL algorithms and their parameters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

HELP = "list FL algorithms and their parameters"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    from fedloom.algorithms import ALGORITHMS

    for name, cls in sorted(ALGORITHMS.items()):
        params = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<11} {json.dumps(params):<70} {doc}")
    return 0
