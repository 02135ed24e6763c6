"""`fedloom export RUN_DIR --out DIR [--merged] [--dtype fp32|bf16]`."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "copy a run's adapter with its model card, or merge it into the base as a plain model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a run folder of `fedloom run`")
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    p.add_argument(
        "--merged",
        action="store_true",
        help="base + adapter merged into one model folder (safetensors, tokenizer, chat "
        "template, generation config, card) that plain transformers loads",
    )
    p.add_argument("--dtype", default="fp32", help="weights of the merged model: fp32 or bf16")
    p.add_argument(
        "--adapter",
        default="adapter",
        help="the adapter inside the run (default `adapter`; `adapters/client_N` for local)",
    )


def main(args: argparse.Namespace) -> int:
    from fedloom.models.export import export_run

    done = export_run(args.run, args.out, args.merged, args.dtype, args.adapter)
    kind = "merged model" if done.merged else "adapter"
    print(f"{kind} in {done.folder}: {', '.join(done.files)}")
    return 0
