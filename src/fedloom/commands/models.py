"""`fedloom models`: the registered models; `--path NAME` prints a model's local base folder."""

from __future__ import annotations

import argparse

HELP = "list the registered models (generators and trained models), or print one's local folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path",
        metavar="NAME",
        help="print the local Hugging Face folder (config, weights, tokenizer) of model NAME — a "
        "registered name or its published id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct: the "
        "exact base a fedloom adapter was trained on (built once from the GGUF)",
    )


def main(args: argparse.Namespace) -> int:
    from fedloom.models import MODELS

    if args.path:
        from fedloom.models.loader import hf_folder
        from fedloom.models.registry import get_model_spec

        spec = get_model_spec(args.path)
        print(hf_folder(spec.name if spec is not None else args.path))
        return 0
    for name, spec in MODELS.items():
        kind = "chat" if spec.chat else "base"
        published = f" [{spec.hub_id}, {spec.quantization}]" if spec.hub_id else ""
        print(f"{name:<30} {kind:<5} {spec.licence:<40} {spec.description}{published}")
    return 0
