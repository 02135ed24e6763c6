"""MT-Bench scored as FastChat scores it: each turn rated 1-10, the categories with GPT-4
reference answers (math, reasoning, coding) against the reference (`reference` judge), the
others on their own (`single`); the score is the mean over every judged turn. A question's
value (for paired comparisons) is the mean of its judged turns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedloom.eval.intervals import normal_interval
from fedloom.judges.base import Item
from fedloom.judges.run import Judged, JudgeModel, run_judge


def mtbench_items(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[str, Item]]]:
    """Judge items per kind: ``<id>:t1`` (turn 1) and ``<id>:t2`` (turn 2, turn 1 in view)
    of every answered question (rows of the `mtbench` suite)."""
    out: dict[str, list[tuple[str, Item]]] = {"single": [], "reference": []}
    for r in rows:
        (q1, q2), (a1, a2) = r["turns"][:2], r["answers"][:2]
        ref = r.get("reference") or []
        first: dict[str, str] = {"question": q1, "answer": a1}
        if ref:
            first["reference"] = ref[0]
        second = first | {"question_2": q2, "answer_2": a2}
        if ref:
            second["reference_2"] = ref[1] if len(ref) > 1 else ""
        out["reference" if ref else "single"] += [
            (f"{r['id']}:t1", first),
            (f"{r['id']}:t2", second),
        ]
    return out


def score_mtbench(
    model: JudgeModel, rows: Sequence[dict[str, Any]], folder: Path, progress: bool = True
) -> tuple[dict[str, Any], dict[str, float]]:
    """(metrics, per-question value) of answered MT-Bench rows; the judge jobs are
    ``folder/mtbench.<kind>.jsonl`` (resumed). Unjudged turns are counted, never scored."""
    judged: list[Judged] = [
        run_judge(kind, model, items, folder / f"mtbench.{kind}.jsonl", progress)
        for kind, items in mtbench_items(rows).items()
        if items
    ]
    turns = {k: v for j in judged for k, v in j.values.items()}
    per_question: dict[str, float] = {}
    for r in rows:
        got = [turns[t] for t in (f"{r['id']}:t1", f"{r['id']}:t2") if t in turns]
        if got:
            per_question[str(r["id"])] = sum(got) / len(got)
    stats = normal_interval(list(turns.values())) if turns else {"mean": None}
    replies = [v for j in judged for v in j.replies]
    parsed = sum(v is not None for v in replies)
    seconds = sum(j.seconds for j in judged)
    metrics: dict[str, Any] = {
        "answered": len(rows),
        "scored": len(per_question),
        "score": stats["mean"],
        "ci95_low": stats.get("ci95_low"),
        "ci95_high": stats.get("ci95_high"),
        **{
            f"score_turn{t}": _mean([v for k, v in turns.items() if k.endswith(f":t{t}")])
            for t in (1, 2)
        },
        "unjudged_turns": 2 * len(rows) - len(turns),
        "parse_rate": round(parsed / max(len(replies), 1), 4),
        "judged_per_second": round(len(replies) / seconds, 3) if seconds else None,
        "judge": model.label,
    }
    return metrics, per_question


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
