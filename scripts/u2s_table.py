"""Print the FedIT-U2S results table (docs/u2s.md) from finished pipeline folders.

    python scripts/u2s_table.py runs/u2s runs/u2s-random runs/u2s-fixed runs/u2s-gold

Per folder: what it trained on, generation cost, data quality, held-out loss on each domain's
gold pairs (base -> tuned) and the suites (base -> tuned, with their 95% intervals).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _stage(folder: Path, name: str) -> dict | None:  # type: ignore[type-arg]
    hits = sorted(folder.glob(f"*-{name}/done.json"))
    return json.loads(hits[0].read_text())["summary"] if hits else None


def main(folders: list[str]) -> None:
    print(
        "| run | pairs | parse ok | grounding | distinct-2 | spread | gen tokens (tok/s) | held-out loss base → tuned | suites base → tuned |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for f in map(Path, folders):
        sel, gen, parse = _stage(f, "select"), _stage(f, "generate"), _stage(f, "parse")
        train, ev = _stage(f, "train"), _stage(f, "evaluate")
        name = f"{f.name} ({sel['selection'] if sel else 'gold pairs'})"
        pairs = train["pairs"] if train else "—"
        q = (
            (f"{parse['parse_success']:.2f}", f"{parse['grounding_mean']:.2f}",
             f"{parse['distinct_2']:.2f}", f"{parse.get('embedding_spread', 0):.2f}")
            if parse else ("—",) * 4
        )  # fmt: skip
        cost = f"{gen['tokens']} ({gen['tokens_per_second']:.1f})" if gen else "—"
        loss = "—"
        if train and train.get("final_eval_loss"):
            b, t = train["base_eval_loss"], train["final_eval_loss"]
            loss = "; ".join(f"{k} {b[k]:.3f} → {t[k]:.3f}" for k in b)
        suites = "—"
        if ev and ev.get("suites"):
            parts = []
            for s, r in ev["suites"].items():
                b, t = r["base"], r["tuned"]
                parts.append(
                    f"{s} {b['accuracy']:.3f} → {t['accuracy']:.3f} "
                    f"[{t['ci95_low']:.2f}, {t['ci95_high']:.2f}] n={t['n']}"
                )
            suites = "; ".join(parts)
        print(f"| {name} | {pairs} | {' | '.join(q)} | {cost} | {loss} | {suites} |")


if __name__ == "__main__":
    main(sys.argv[1:])
