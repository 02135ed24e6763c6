"""A pipeline on the experiment kit, whole: "does each client holding more of its own data help
the federated model?" Two arms (every client keeps `small` records, or all of them), each seed
its own split, one paired table pooled over the seeds. Tested in tests/test_experiment_kit.py.

    import more_data  # registers `method: more-data`
    fedloom pipeline more_data.yaml --set 'seeds=[0,1,2]'
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.errors import FedloomError
from fedloom.experiment.collect import compare_items
from fedloom.experiment.evaluate import Scorer, heldout_vs_base
from fedloom.experiment.report import ResultTable, stage_costs, write_stage_report
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.pipeline import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
    seeded,
)
from fedloom.utils import read_jsonl, write_jsonl

ARMS = ("small", "full")


@dataclass
class MoreDataConfig:  # the YAML section `more-data:`
    path: str = ""
    """A JSONL file of {"instruction", "response"} records."""
    clients: int = 2
    small: int = 4
    """Records per client in the `small` arm."""
    heldout: int = 8

    def __post_init__(self) -> None:
        if not self.path or self.clients < 1 or self.small < 1 or self.heldout < 1:
            raise FedloomError("`more-data`: give `path`, and clients, small, heldout >= 1")


@register_pipeline
class MoreData(PipelineMethod):
    name = "more-data"
    config_cls = MoreDataConfig

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        """One seed's stages (the runner's default `stages` runs them for every seed, in folders
        `data.s0`, `small.train.s0`, ..., then `table` over the seeds)."""
        st = [Stage("data", partial(self.data, cfg=cfg))]
        return st + [
            Stage(f"{a}.train", partial(self.train, cfg=cfg, arm=a), {"arm": a}) for a in ARMS
        ]

    def data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        p: MoreDataConfig = cfg.params
        rows = read_jsonl(Path(p.path))
        random.Random(cfg.seed).shuffle(rows)
        held, rest = rows[: p.heldout], rows[p.heldout :]
        write_jsonl(ctx.folder / "heldout.jsonl", held)
        for c in range(p.clients):
            write_jsonl(ctx.folder / f"client_{c}.jsonl", rest[c :: p.clients])
        return {"heldout": len(held), "train": len(rest)}

    def train(self, ctx: StageContext, cfg: PipelineConfig, arm: str) -> dict[str, Any]:
        p: MoreDataConfig = cfg.params
        data = ctx.folder_of("data")
        keep = p.small if arm == "small" else None
        clients = [read_jsonl(data / f"client_{c}.jsonl")[:keep] for c in range(p.clients)]
        sources = client_sources(ctx.folder, clients) + [heldout_source(data / "heldout.jsonl")]
        res = train_run(cfg.train, ctx.folder / "run", sources, ctx.console)
        held = [
            InstructionRecord(r["instruction"], r["response"])
            for r in read_jsonl(data / "heldout.jsonl")
        ]
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")  # the base: scored once
        loss = heldout_vs_base(scorer, res.adapter, held, cfg.train.data.max_seq_len, ctx.folder,
                               "heldout", cfg.seed)  # fmt: skip
        return {"records": sum(map(len, clients)), "heldout_loss": loss} | res.brief()

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        def row(arm: tuple[str, str], ref: tuple[str, str], names: tuple[str, str]) -> Any:
            return compare_items(ctx, cfg.seeds, arm, ref, *names, metric="held-out loss")

        rows = [
            row(("full.train", "heldout.tuned"), ("small.train", "heldout.tuned"), ("full", "small")),
            *(row((f"{a}.train", "heldout.tuned"), (f"{a}.train", "heldout.base"), (a, "base")) for a in ARMS),
        ]  # fmt: skip
        keys = [k for k in ctx.stage_folders if ".train." in k]
        table = ResultTable("More data per client", [r for r in rows if r is not None],
                            intro=f"Seeds {cfg.seeds}.", costs=stage_costs(ctx, keys))  # fmt: skip
        return write_stage_report(ctx, table)
