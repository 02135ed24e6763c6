"""Reading per-item scores back from finished stages, seed by seed, into comparisons.

A stage that scores items saves them as ``<stage folder>/items/<name>.json``
(:meth:`~fedloom.experiment.evaluate.ItemScores.save`), e.g. ``items/heldout.tuned.json``. A
table stage compares two such files across the seeds that finished both."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedloom.experiment.compare import Comparison, compare
from fedloom.experiment.evaluate import ItemScores
from fedloom.pipeline.runner import StageContext

ItemRef = tuple[str, str]
"""(stage name, item file stem), e.g. ("train", "heldout.tuned")."""


def items_path(folder: Path, name: str) -> Path:
    return folder / "items" / f"{name}.json"


def seed_items(
    ctx: StageContext, seeds: Sequence[int], ref: ItemRef
) -> tuple[dict[int, dict[str, float]], ItemScores | None]:
    """{seed: per-item values} of ``ref`` for the seeds whose stage finished and saved it; and
    one of the scores (for its metric and direction)."""
    stage, name = ref
    out: dict[int, dict[str, float]] = {}
    last = None
    for s in seeds:
        if not ctx.has(stage, s):
            continue
        path = items_path(ctx.folder_of(stage, s), name)
        if path.exists():
            last = ItemScores.load(path)
            out[s] = last.values
    return out, last


def compare_items(
    ctx: StageContext,
    seeds: Sequence[int],
    arm: ItemRef,
    reference: ItemRef,
    arm_name: str,
    reference_name: str,
    metric: str | None = None,
    seed: int = 0,
) -> Comparison | None:
    """``arm`` against ``reference`` over every seed that has both; None when none has."""
    a, sa = seed_items(ctx, seeds, arm)
    r, _ = seed_items(ctx, seeds, reference)
    if sa is None or not set(a) & set(r):
        return None
    return compare(
        {s: a[s] for s in a if s in r},
        {s: r[s] for s in r if s in a},
        arm_name=arm_name,
        reference_name=reference_name,
        metric=metric or sa.metric,
        lower_is_better=sa.lower_is_better,
        seed=seed,
    )


def item_comparisons(
    ctx: StageContext,
    seeds: Sequence[int],
    sets: Sequence[tuple[str, str, str]],
    arm_name: str,
    reference_name: str,
    arm: str = "tuned",
    reference: str = "base",
) -> list[Comparison]:
    """For each (label, stage, item set): ``<set>.<arm>`` against ``<set>.<reference>`` of the
    same stage; sets no seed has finished are left out."""
    rows = []
    for label, stage, name in sets:
        c = compare_items(
            ctx, seeds, (stage, f"{name}.{arm}"), (stage, f"{name}.{reference}"),
            arm_name, reference_name, metric=label,
        )  # fmt: skip
        if c is not None:
            rows.append(c)
    return rows
