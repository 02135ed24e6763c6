"""Print the KnowledgeSG method table of a pipeline folder, for the methods whose stages have
finished so far (the pipeline's own `table` stage writes the full one at the end).

    python scripts/ksg_table.py runs/knowledgesg
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from fedloom.pipeline import load_pipeline_config
from fedloom.pipeline.runner import StageContext
from fedloom.synth.knowledgesg.report import method_row, table_markdown


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/knowledgesg")
    cfg = load_pipeline_config(out / "pipeline.yaml")
    folders = {
        p.name.split("-", 1)[1]: p
        for p in out.iterdir()
        if p.is_dir() and (p / "done.json").exists()
    }
    ctx = StageContext(out, out, Console(), folders)
    rows = [method_row(ctx, cfg, m) for m in cfg.params.methods if f"{m}.evaluate" in folders]
    missing = [m for m in cfg.params.methods if f"{m}.evaluate" not in folders]
    print(table_markdown(rows), end="")
    if missing:
        print(f"\nnot finished yet: {', '.join(missing)}")


if __name__ == "__main__":
    main()
