"""Build a federated dataset from a run config: sources -> held-out split -> tokens -> clients."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from transformers import PreTrainedTokenizerBase

from fedloom.data.filters import apply_where
from fedloom.data.partition import PartitionError, partition
from fedloom.data.schema import Record
from fedloom.data.sources import DataSourceError, LoadReport, load_source_report
from fedloom.data.template import TokenizeReport, tokenize_all
from fedloom.errors import FedloomError
from fedloom.settings import DataConfig, PartitionConfig, SafetyConfig
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
    malicious: list[int] = field(default_factory=list)
    """Clients that train on `safety.attack` data only."""
    benign_left_out: int = 0
    """Training records the partition dealt to malicious clients, left out (they train on
    attack data only)."""

    def client_sizes(self) -> list[int]:
        return [len(c) for c in self.clients]

    def add(
        self, cid: int, records: list[Record], tokenizer: PreTrainedTokenizerBase, max_seq_len: int
    ) -> TokenizeReport:
        """Tokenise ``records`` and append them to client ``cid``'s shard (counted in the
        training report: what was cut or dropped is never silent)."""
        if not 0 <= cid < len(self.clients):
            raise PartitionError(f"client {cid} is not in [0, {len(self.clients)})")
        examples, kept, rep = tokenize_all(tokenizer, records, max_seq_len)
        self.clients[cid].extend(range(len(self.train), len(self.train) + len(examples)))
        self.train.extend(examples)
        self.train_records.extend(kept)
        total = self.report.setdefault("train", TokenizeReport())
        for f in ("kept", "dropped", "truncated", "turns_cut"):
            setattr(total, f, getattr(total, f) + getattr(rep, f))
        return rep

    def heldout_by_domain(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.heldout_records):
            groups.setdefault(str(r.metadata.get("domain", "all")), []).append(i)
        return dict(sorted(groups.items()))


@dataclass
class RecordSplit:
    """Every source's records, split into training and held-out, before any tokenisation."""

    train: list[Record]
    heldout: list[Record]
    train_source: list[int]
    """Per training record, the index of its source in ``data.sources``."""


Converter = Callable[[Record], Record]
"""A task's record converter (``get_task(name).to_record``): the data layer receives it, and so
does not import the tasks."""


def split_records(
    cfg: DataConfig,
    seed: int,
    reports: list[LoadReport] | None = None,
    convert: Converter | None = None,
) -> RecordSplit:
    """All sources' records, in the task's form when ``convert`` is given (the task's
    ``to_record``; sft: instructions and conversations, with multiple-choice questions as
    lettered questions answered with the option and its explanation; dpo: preference pairs) or
    as loaded (``None``: raw text stays text), split per source into (train, held-out) by a
    seeded shuffle."""
    out = RecordSplit([], [], [])
    for s, src in enumerate(cfg.sources):
        loaded, rep = load_source_report(
            src.name, src.domain, src.path, src.columns, src.schema, src.skip_malformed
        )
        if src.where:
            loaded, dropped = apply_where(loaded, src.where)
            for reason, n in dropped.items():
                rep.skipped[reason] = rep.skipped.get(reason, 0) + n
            rep.kept = len(loaded)
        if reports is not None:
            reports.append(rep)
        try:
            records = [convert(r) for r in loaded] if convert is not None else loaded
        except FedloomError as e:  # the task refuses a record: say which source it came from
            raise type(e)(f"source {src.name!r}: {e}") from None
        order = list(range(len(records)))
        # keyed by the file's name, not its folder: moving a data set keeps its split
        rng_for(seed, "data", src.name, Path(src.path).name if src.path else "").shuffle(order)
        if src.limit is not None:
            order = order[: src.limit]
        n_held = (
            len(order) if src.heldout_only else cfg.heldout if src.heldout is None else src.heldout
        )
        if not src.heldout_only and len(order) <= n_held:
            raise DataSourceError(
                f"source {src.name!r} has {len(order)} examples, not more than its held-out "
                f"count ({n_held}); lower data.heldout (or the source's `heldout`) or raise its "
                "limit"
            )
        out.heldout += [records[i] for i in order[:n_held]]
        out.train += [records[i] for i in order[n_held:]]
        out.train_source += [s] * (len(order) - n_held)
    return out


def load_records(
    cfg: DataConfig,
    seed: int,
    reports: list[LoadReport] | None = None,
    convert: Converter | None = None,
) -> tuple[list[Record], list[Record]]:
    """(train, held-out) records of every source (see :func:`split_records`)."""
    split = split_records(cfg, seed, reports, convert)
    return split.train, split.heldout


def assign_clients(
    split: RecordSplit, data_cfg: DataConfig, part_cfg: PartitionConfig, seed: int
) -> list[list[int]]:
    """Indices into ``split.train`` per client. Records of sources without ``clients`` are
    partitioned over every client by ``partition.strategy``; a source with ``clients: [..]``
    belongs to those clients only and is dealt among them (seeded shuffle, round robin)."""
    owned = {s for s, src in enumerate(data_cfg.sources) if src.clients}
    shared = [i for i, s in enumerate(split.train_source) if s not in owned]
    if shared:
        parts = partition(
            part_cfg.strategy,
            [split.train[i].metadata for i in shared],
            part_cfg.num_clients,
            key=part_cfg.key,
            seed=seed,
            alpha=part_cfg.alpha,
            min_examples=part_cfg.min_examples,
            size_cv=part_cfg.size_cv,
        )
        clients = [[shared[j] for j in part] for part in parts]
    else:
        if part_cfg.num_clients is None:
            raise PartitionError(
                "every source is assigned to clients (`clients:`), so `partition.num_clients` "
                "must say how many clients there are"
            )
        clients = [[] for _ in range(part_cfg.num_clients)]
    for s in sorted(owned):
        src = data_cfg.sources[s]
        bad = [c for c in src.clients or [] if not 0 <= c < len(clients)]
        if bad:
            raise PartitionError(
                f"source {src.name!r} is assigned to clients {bad}, but there are only "
                f"{len(clients)} clients (0..{len(clients) - 1})"
            )
        mine = [i for i, t in enumerate(split.train_source) if t == s]
        rng_for(seed, "owned", s, src.name).shuffle(mine)
        for j, i in enumerate(mine):
            clients[(src.clients or [])[j % len(src.clients or [])]].append(i)
    for c in clients:
        c.sort()
    return clients


def build_federated_data(
    data_cfg: DataConfig,
    part_cfg: PartitionConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    pooled: bool = False,
    convert: Converter | None = None,
    only_client: int | None = None,
    safety: SafetyConfig | None = None,
) -> FederatedData:
    """Load, split, partition (records, before tokenisation) and tokenise. ``pooled`` puts all
    training data on one client (the centralized baseline) while keeping the same held-out set.
    ``only_client``: tokenise and hold only that client's shard (what a deployed client
    process holds); the other clients' index lists are empty. ``safety``: its malicious
    clients hold the attack source's records and nothing else."""
    reports: list[LoadReport] = []
    attack = safety.attack if safety is not None else None
    if attack is not None:  # one more source, owned by the malicious clients (ids set below)
        data_cfg = replace(data_cfg, sources=[*data_cfg.sources, replace(attack, heldout=0)])
    split = split_records(data_cfg, seed, reports, convert)
    malicious: list[int] = []
    left_out = 0
    if pooled:
        owners = [list(range(len(split.train)))]
    elif attack is not None and safety is not None:
        a = len(data_cfg.sources) - 1
        benign = replace(data_cfg, sources=data_cfg.sources[:a])
        owners = assign_clients(
            RecordSplit(
                [split.train[i] for i, s in enumerate(split.train_source) if s != a],
                [],
                [s for s in split.train_source if s != a],
            ),
            benign,
            part_cfg,
            seed,
        )
        # positions in the filtered split -> positions in the full one
        full = [i for i, s in enumerate(split.train_source) if s != a]
        owners = [[full[i] for i in c] for c in owners]
        malicious = safety.resolve(len(owners), seed)
        mine = [i for i, s in enumerate(split.train_source) if s == a]
        rng_for(seed, "attack", attack.name).shuffle(mine)
        for m in malicious:
            left_out += len(owners[m])
            owners[m] = []
        for j, i in enumerate(mine):
            owners[malicious[j % len(malicious)]].append(i)
        for shard in owners:
            shard.sort()
    else:
        owners = assign_clients(split, data_cfg, part_cfg, seed)
    if only_client is not None:
        if not 0 <= only_client < len(owners):
            raise PartitionError(
                f"client {only_client} does not exist: the config's partition has "
                f"{len(owners)} clients (0..{len(owners) - 1})"
            )
        owners = [c if k == only_client else [] for k, c in enumerate(owners)]
    wanted = sorted({i for c in owners for i in c})
    train, train_recs, train_rep = tokenize_all(
        tokenizer, [split.train[i] for i in wanted], data_cfg.max_seq_len
    )
    kept_ids = {id(r): j for j, r in enumerate(train_recs)}
    position = {i: kept_ids[id(split.train[i])] for i in wanted if id(split.train[i]) in kept_ids}
    clients = [[position[i] for i in c if i in position] for c in owners]
    held, held_recs, held_rep = tokenize_all(tokenizer, split.heldout, data_cfg.max_seq_len)
    return FederatedData(
        train,
        train_recs,
        held,
        held_recs,
        clients,
        {"train": train_rep, "heldout": held_rep},
        reports,
        malicious,
        left_out,
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
    if data.malicious:
        console.print(
            f"[red]malicious clients {data.malicious}: they train on the attack data only "
            f"({data.benign_left_out} benign records the split gave them are left out)[/red]"
        )
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
