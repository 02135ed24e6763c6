"""The data stage: Dirichlet label-skewed private clients, held-out and MIA sets, kept disjoint."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.data.sources import load_source_report
from fedloom.experiment.guards import require_disjoint
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.synth.common import write_jsonl
from fedloom.synth.fedgc.config import FedGCConfig
from fedloom.utils import rng_for


def balanced_heldout(
    recs: list[InstructionRecord], per_label: int
) -> tuple[list[InstructionRecord], list[InstructionRecord]]:
    """The first ``per_label`` records of each label held out (a balanced evaluation set); the
    rest, in order."""
    held: list[InstructionRecord] = []
    rest: list[InstructionRecord] = []
    per: Counter[str] = Counter()
    for r in recs:
        lab = str(r.metadata["label"])
        if per[lab] < per_label:
            per[lab] += 1
            held.append(r)
        else:
            rest.append(r)
    return held, rest


def as_row(r: InstructionRecord, labels: list[str], **extra: Any) -> dict[str, Any]:
    """A classification record as a JSONL row (label, label set, provenance)."""
    m = r.metadata
    return {
        "instruction": r.instruction,
        "response": r.response,
        "label": m["label"],
        "labels": labels,
        "domain": m["label"],
        "origin": "private",
        "source_id": m.get("id"),
    } | extra


def data_stage(ctx: StageContext, cfg: PipelineConfig, alpha: float) -> dict[str, Any]:
    """The private pool split over clients by Dirichlet(α) on the label, a balanced held-out
    set, and member / non-member sets for membership inference; disjoint (a leak raises)."""
    from fedloom.data.partition import partition

    p: FedGCConfig = cfg.params
    loaded, _ = load_source_report(p.source)
    recs = [r for r in loaded if isinstance(r, InstructionRecord) and "label" in r.metadata]
    rng_for(cfg.seed, "fedgc-data").shuffle(recs)  # the same pool for every α
    labels = sorted({str(r.metadata["label"]) for r in recs})
    held, rest = balanced_heldout(recs, p.heldout_per_label)
    n_priv = p.num_clients * p.private_per_client
    pool, nonmembers = rest[:n_priv], rest[n_priv : n_priv + p.mia_examples]
    parts = partition("dirichlet", [r.metadata for r in pool], p.num_clients, key="label",
                      seed=cfg.seed, alpha=alpha, min_examples=2)  # fmt: skip
    counts = []
    for c, idx in enumerate(parts):
        write_jsonl(ctx.folder / f"private_{c}.jsonl", [as_row(pool[i], labels) for i in idx])
        counts.append(dict(Counter(str(pool[i].metadata["label"]) for i in idx)))
    write_jsonl(ctx.folder / "heldout.jsonl", [as_row(r, labels, origin="heldout") for r in held])
    members = [pool[i] for idx in parts for i in idx][: p.mia_examples]
    write_jsonl(ctx.folder / "mia_members.jsonl", [as_row(r, labels) for r in members])
    write_jsonl(ctx.folder / "mia_nonmembers.jsonl",
                [as_row(r, labels, origin="nonmember") for r in nonmembers])  # fmt: skip
    ids = lambda rs: {r.metadata.get("id") for r in rs}  # noqa: E731
    require_disjoint(ids(held), ids(pool), "held-out questions among the clients' data")
    require_disjoint(ids(nonmembers), ids(pool), "MIA non-members among the clients' data")
    require_disjoint(ids(held), ids(nonmembers), "held-out questions among MIA non-members")
    summary = {
        "labels": labels,
        "clients": counts,
        "heldout": len(held),
        "private": len(pool),
        "mia": [len(members), len(nonmembers)],
    }
    ctx.console.print(summary)
    return summary
