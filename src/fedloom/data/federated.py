"""Build a federated dataset from a run config: sources -> held-out split -> tokens -> clients."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from transformers import PreTrainedTokenizerBase

from fedloom.config import DataConfig, PartitionConfig
from fedloom.data.partition import partition
from fedloom.data.schema import Record
from fedloom.data.sources import DataSourceError, LoadReport, load_source_report
from fedloom.data.template import TokenizeReport, tokenize_all
from fedloom.utils import rng_for


@dataclass
class FederatedData:
    train: list[Any]
    """TokenizedExample (sft) or TokenizedPair (dpo) per training record."""
    train_records: list[Record]
    heldout: list[Any]
    heldout_records: list[Record]
    clients: list[list[int]]
    """Indices into ``train`` per client (shared storage: no per-client copies)."""
    report: dict[str, TokenizeReport] = field(default_factory=dict)
    sources: list[LoadReport] = field(default_factory=list)
    """What loading each source kept and left out."""

    def client_sizes(self) -> list[int]:
        return [len(c) for c in self.clients]

    def heldout_by_domain(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.heldout_records):
            groups.setdefault(str(r.metadata.get("domain", "all")), []).append(i)
        return dict(sorted(groups.items()))


def load_records(
    cfg: DataConfig, seed: int, reports: list[LoadReport] | None = None, task: str = "sft"
) -> tuple[list[Record], list[Record]]:
    """All sources' records in the task's form (sft: instructions and conversations, with
    multiple-choice questions as lettered questions answered with the option and its
    explanation; dpo: preference pairs), split per source into (train, held-out) by a seeded
    shuffle."""
    from fedloom.tasks import TaskError, get_task  # local import: tasks reach into eval

    task_ = get_task(task)
    train: list[Record] = []
    heldout: list[Record] = []
    for src in cfg.sources:
        loaded, rep = load_source_report(
            src.name, src.domain, src.path, src.columns, src.schema, src.skip_malformed
        )
        if reports is not None:
            reports.append(rep)
        try:
            records = [task_.to_record(r) for r in loaded]
        except TaskError as e:
            raise TaskError(f"source {src.name!r}: {e}") from None
        order = list(range(len(records)))
        # keyed by the file's name, not its folder: moving a data set keeps its split
        rng_for(seed, "data", src.name, Path(src.path).name if src.path else "").shuffle(order)
        if src.limit is not None:
            order = order[: src.limit]
        if len(order) <= cfg.heldout:
            raise DataSourceError(
                f"source {src.name!r} has {len(order)} examples, not more than `data.heldout` "
                f"({cfg.heldout}); lower data.heldout or raise the source's limit"
            )
        heldout += [records[i] for i in order[: cfg.heldout]]
        train += [records[i] for i in order[cfg.heldout :]]
    return train, heldout


def build_federated_data(
    data_cfg: DataConfig,
    part_cfg: PartitionConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    pooled: bool = False,
    task: str = "sft",
) -> FederatedData:
    """Load, split, tokenise and partition. ``pooled`` puts all training data on one client
    (the centralized baseline) while keeping the same held-out set."""
    reports: list[LoadReport] = []
    train_recs, held_recs = load_records(data_cfg, seed, reports, task)
    train, train_recs, train_rep = tokenize_all(tokenizer, train_recs, data_cfg.max_seq_len)
    held, held_recs, held_rep = tokenize_all(tokenizer, held_recs, data_cfg.max_seq_len)
    if pooled:
        clients = [list(range(len(train)))]
    else:
        clients = partition(
            part_cfg.strategy,
            [r.metadata for r in train_recs],
            part_cfg.num_clients,
            key=part_cfg.key,
            seed=seed,
            alpha=part_cfg.alpha,
            min_examples=part_cfg.min_examples,
        )
    return FederatedData(
        train,
        train_recs,
        held,
        held_recs,
        clients,
        {"train": train_rep, "heldout": held_rep},
        reports,
    )


def summary_table(data: FederatedData, key: str, console: Console) -> None:
    """Print client sizes and label counts (the split a run starts with)."""
    values = sorted({str(r.metadata.get(key)) for r in data.train_records})
    table = Table(title=f"clients ({len(data.clients)}) — examples by `{key}`")
    table.add_column("client", justify="right")
    table.add_column("examples", justify="right")
    for v in values:
        table.add_column(v, justify="right")
    for c, idx in enumerate(data.clients):
        counts = Counter(str(data.train_records[i].metadata.get(key)) for i in idx)
        table.add_row(str(c), str(len(idx)), *(str(counts.get(v, 0)) for v in values))
    console.print(table)
    for src_rep in data.sources:
        if src_rep.skipped or src_rep.notes:
            console.print(f"[yellow]{src_rep.summary()}[/yellow]")
    for split, rep in data.report.items():
        if rep.truncated or rep.dropped:
            cut = f" ({rep.turns_cut} whole assistant turns cut)" if rep.turns_cut else ""
            console.print(
                f"[yellow]{split}: {rep.truncated} examples truncated to max_seq_len{cut}, "
                f"{rep.dropped} dropped (prompt alone exceeds max_seq_len)[/yellow]"
            )
