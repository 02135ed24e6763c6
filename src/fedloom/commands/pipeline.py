"""`fedloom pipeline CONFIG [--set k=v] [--out DIR]`: run or resume a staged pipeline."""

from __future__ import annotations

import argparse

from fedloom.commands.common import add_out, add_set, with_out

HELP = "run (or resume) a staged research pipeline (u2s, knowledgesg, fedgc, safety, bench): fedloom pipeline configs/u2s.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config", help="YAML pipeline config (method, out, seeds, the method's section, train)"
    )
    add_set(p)
    add_out(p, "output folder (default: the config's `out`)")


def main(args: argparse.Namespace) -> int:
    import fedloom.pipeline.shipped  # noqa: F401  (registers the pipelines)
    from fedloom.pipeline import load_pipeline_config, run_pipeline

    pcfg = load_pipeline_config(args.config, with_out(args))
    summaries = run_pipeline(pcfg)
    print(f"pipeline {pcfg.method}: {len(summaries)} stages done · outputs in {pcfg.out}/")
    return 0
