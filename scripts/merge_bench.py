"""Merge bench grids run in parts (e.g. one process per core, each with its own
`--set bench.federations=[...]` and `--set out=...`) into one folder, and write the report over
every finished stage of CONFIG (stages not finished in any part are listed as not collected,
never run here).

    python scripts/merge_bench.py configs/bench.yaml runs/bench runs/bench-a runs/bench-b
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

import fedloom.bench.pipeline  # noqa: F401  (registers the bench pipeline)
from fedloom.pipeline import load_pipeline_config
from fedloom.pipeline.runner import PIPELINES, run_stages


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    config, out, parts = Path(argv[0]), Path(argv[1]), [Path(p) for p in argv[2:]]
    out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for d in sorted(part.iterdir()):
            if d.is_dir() and d.name != "report" and not (out / d.name).exists():
                (out / d.name).symlink_to(d.resolve())
    cfg = load_pipeline_config(config, [f"out={out}"])
    stages = PIPELINES["bench"]().stages(cfg)
    done = [s for s in stages if s.name == "report" or (out / s.key / "done.json").exists()]
    print(f"{len(done) - 1} of {len(stages) - 1} stages finished in {', '.join(map(str, parts))}")
    run_stages(out, done, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
