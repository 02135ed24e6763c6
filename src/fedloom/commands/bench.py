"""`fedloom bench CONFIG [--set k=v] [--out DIR]`: the methods x federations x seeds grid and its report."""

from __future__ import annotations

import argparse

from fedloom.commands.common import add_out, add_set, with_out

HELP = "run (or resume) a methods x federations x seeds grid and write its HTML report: fedloom bench configs/bench.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML bench config (method: bench, out, seeds, bench:, train:)")
    add_set(p)
    add_out(p, "output folder (default: the config's `out`)")


def main(args: argparse.Namespace) -> int:
    import fedloom.pipeline.shipped  # noqa: F401  (registers the pipelines)
    from fedloom.pipeline import load_pipeline_config, run_pipeline
    from fedloom.settings import ConfigError

    pcfg = load_pipeline_config(args.config, with_out(args))
    if pcfg.method != "bench":
        raise ConfigError(
            f"{args.config}: `method` is {pcfg.method!r}; `fedloom bench` runs `method: "
            "bench` configs (use `fedloom pipeline` for the others)"
        )
    summaries = run_pipeline(pcfg)
    rep = summaries.get("report", {})
    for line in rep.get("verdicts", []):
        print(line)
    print(f"bench: {len(summaries)} stages done · report in {pcfg.out}/report.html")
    return 0
