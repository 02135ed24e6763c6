"""Print the FedIT-U2S results table (docs/u2s.md) from finished pipeline folders.

    python scripts/u2s_table.py runs/u2s runs/u2s-random runs/u2s-fixed runs/u2s-gold

Per folder: what it trained on, data quality, the change in per-example loss on each domain's
gold pairs (tuned - base, 95% paired-bootstrap interval) and the suites (base -> tuned, 95%
Wilson interval of the tuned score).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _stage(folder: Path, name: str) -> Any:
    # name-keyed stage folders (the older numbered layout, <k>-<name>, still read)
    hits = sorted(folder.glob(f"{name}/done.json")) or sorted(folder.glob(f"*-{name}/done.json"))
    return json.loads(hits[0].read_text())["summary"] if hits else None


def _f(x: Any, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def main(folders: list[str]) -> None:
    head = "| run | pairs | parse ok | grounding | distinct-2 | spread | Δ gold loss (tuned − base) | suites |"
    print(head + "\n|---|---|---|---|---|---|---|---|")
    for f in map(Path, folders):
        sel, parse = _stage(f, "select"), _stage(f, "parse")
        train, ev, gl = _stage(f, "train"), _stage(f, "evaluate"), _stage(f, "gold_loss")
        name = f"`{f.name}` ({sel['selection'] if sel else 'gold pairs'})"
        parse = parse or {}
        q = [_f(parse.get(k)) for k in ("parse_success", "grounding_mean", "distinct_2")]
        q.append(_f(parse.get("embedding_spread")))
        loss = "—"
        if gl:
            loss = "; ".join(
                f"{d} {r['diff']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"
                for d, r in gl.items()
            )
        suites = "—"
        if ev and ev.get("suites"):
            suites = "; ".join(
                f"{s} {r['base']['accuracy']:.3f} → {r['tuned']['accuracy']:.3f} "
                f"[{r['tuned']['ci95_low']:.2f}, {r['tuned']['ci95_high']:.2f}]"
                for s, r in ev["suites"].items()
            )
        pairs = train["pairs"] if train else "—"
        print(f"| {name} | {pairs} | {' | '.join(q)} | {loss} | {suites} |")


if __name__ == "__main__":
    main(sys.argv[1:])
