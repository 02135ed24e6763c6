"""`fedloom bench CONFIG`: the methods x federations x seeds grid as stages of the stage runner.

Stages, in order: ``stats.<federation>`` (diversity statistics and plots), ``base.<fed>.s<seed>``
(the base model scored once per federation and seed), one cell ``<fed>.<method>.s<seed>`` per
grid point (a federated run, then its evaluation), and ``report`` (the collector, the HTML
report and the markdown summary). A cell with a ``done.json`` is skipped; a cell cut off in
training resumes from its checkpoint; one cut off in evaluation keeps its run and re-evaluates.
"""

from __future__ import annotations

import functools
from functools import partial
from pathlib import Path
from typing import Any

from fedloom.bench.config import BenchConfig
from fedloom.bench.evaluate import CellEval, combine_clients
from fedloom.bench.federations import FederationSpec, get_federation
from fedloom.config import config_from_dict
from fedloom.data.schema import Record
from fedloom.experiment.guards import require_disjoint
from fedloom.experiment.train import run_or_resume
from fedloom.judges import JudgeModel
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.settings import RunConfig


@functools.lru_cache(maxsize=8)
def heldout_and_trained(
    name: str, seed: int
) -> tuple[tuple[Record, ...], frozenset[tuple[str, str]]]:
    """The federation's held-out records (never trained on) and the (source, id) keys of its
    training records (suites leave those items out)."""
    from fedloom.data.federated import split_records
    from fedloom.eval.suites import source_key

    spec = get_federation(name)
    cfg = config_from_dict(spec.sections() | {"seed": seed})
    from fedloom.tasks import get_task

    split = split_records(cfg.data, seed, None, get_task(cfg.task).to_record)
    trained = frozenset(source_key(r) for r in split.train)
    held = tuple(split.heldout)
    require_disjoint({source_key(r) for r in held}, trained, f"{name}: held-out items in training")
    return held, trained


def run_config(cfg: PipelineConfig, spec: FederationSpec, method: str, seed: int) -> RunConfig:
    """The cell's run config: the bench config's `train` section (model, LoRA, rounds, local
    training) with the federation's data and split and the method."""
    b: BenchConfig = cfg.params
    raw = cfg.train.to_dict()
    raw |= spec.sections()
    raw["seed"] = seed
    raw["federation"] |= {
        "algorithm": method,
        "params": dict(b.method_params.get(method, {})),
        "sample_clients": b.sample_clients.get(spec.name, spec.sample_clients),
    }
    if spec.name in b.epochs:
        raw["train"] = dict(raw["train"]) | {"epochs": b.epochs[spec.name]}
    # the run's own held-out loss is a progress figure only: the cell's measurement is the
    # bench's scoring of every arm on the same `bench.heldout` items afterwards
    raw["eval"] |= {"max_examples": min(b.heldout, 8), "suites": [], "sample_prompts": 0}
    return config_from_dict(raw)


@register_pipeline
class BenchPipeline(PipelineMethod):
    name = "bench"
    config_cls = BenchConfig

    def preflight(self, cfg: PipelineConfig) -> None:
        """The judge answers before any stage runs (a dead endpoint fails in seconds)."""
        if cfg.params.judge is not None:
            JudgeModel.shared(cfg.params.judge).preflight()

    def stages(self, cfg: PipelineConfig) -> list[Stage]:
        b: BenchConfig = cfg.params
        st: list[Stage] = []
        if b.stats:
            st += [
                Stage(f"stats.{f}", partial(self._stats, cfg=cfg, fed=f), {"federation": f})
                for f in b.federations
            ]
        for f in b.federations:
            for seed in cfg.seeds:
                st.append(
                    Stage(
                        f"base.{f}",
                        partial(self._base, cfg=cfg, fed=f, seed=seed),
                        {"kind": "base", "federation": f, "seed": seed},
                        seed=seed,
                    )
                )
        # method by method across the federations: a grid cut off early (or a rerun reading a
        # half-finished folder) has every federation's first methods, local first
        for m in dict.fromkeys(m for f in b.federations for m in b.methods_of(f)):
            for f in [f for f in b.federations if m in b.methods_of(f)]:
                for seed in cfg.seeds:
                    st.append(
                        Stage(
                            f"{f}.{m}",
                            partial(self._cell, cfg=cfg, fed=f, method=m, seed=seed),
                            {"kind": "cell", "federation": f, "method": m, "seed": seed},
                            seed=seed,
                        )
                    )
        st.append(Stage("report", partial(self._report, cfg=cfg), {"kind": "report"}, always=True))
        return st

    def _stats(self, ctx: StageContext, cfg: PipelineConfig, fed: str) -> dict[str, Any]:
        from fedloom.bench.stats import write_stats
        from fedloom.models.loader import load_tokenizer

        tok = load_tokenizer(cfg.train.model.name)
        b: BenchConfig = cfg.params
        stats = write_stats(get_federation(fed), ctx.folder, cfg.seed, tok, b.embedder)
        ctx.console.print({fed: stats.summary | {"languages": "…"}})
        return stats.summary

    def _base(self, ctx: StageContext, cfg: PipelineConfig, fed: str, seed: int) -> dict[str, Any]:
        from fedloom.bench.evaluate import evaluate_model

        spec = get_federation(fed)
        held, trained = heldout_and_trained(fed, seed)
        ev = evaluate_model(
            cfg.train.model,
            None,
            list(held),
            set(trained),
            cfg.params,
            spec.task,
            cfg.train.data.max_seq_len,
            seed,
            ctx.folder,
        )
        ev.save(ctx.folder)
        return {"federation": fed, "seed": seed, "metrics": ev.metrics}

    def _cell(
        self, ctx: StageContext, cfg: PipelineConfig, fed: str, method: str, seed: int
    ) -> dict[str, Any]:
        from fedloom.bench.evaluate import evaluate_model

        b: BenchConfig = cfg.params
        spec = get_federation(fed)
        run_cfg = run_config(cfg, spec, method, seed)
        out = ctx.folder / "run"
        # a cell trained before a cut in evaluation is read back, one cut in training resumes
        summary = run_or_resume(run_cfg, out, ctx.console, b.engine).summary
        held, trained = heldout_and_trained(fed, seed)

        def score(adapter: Path, folder: Path) -> CellEval:
            ev = evaluate_model(
                run_cfg.model, adapter, list(held), set(trained), b, spec.task,
                run_cfg.data.max_seq_len, seed, folder, run_cfg.train.beta,
            )  # fmt: skip
            ev.save(folder)
            return ev

        if (out / "adapter").exists():
            extra: dict[str, Any] = {"adapter": "run/adapter"}
            ev = score(out / "adapter", ctx.folder)
        else:  # `local`: every client that trained alone is scored; the cell is their mean
            clients = sorted(
                (out / "adapters").glob("client_*"), key=lambda p: int(p.name.split("_")[1])
            )
            evs = {p.name: score(p, ctx.folder / "clients" / p.name) for p in clients}
            ev, best = combine_clients(evs)
            ev.save(ctx.folder)
            for name, scores in evs[best].items.items():
                scores.save(ctx.folder / "items" / f"{name}.best.json")
            extra = {"adapter": "run/adapters/*", "clients": sorted(evs), "best_client": best}
        return {
            "federation": fed,
            "method": method,
            "seed": seed,
            **extra,
            "final_eval_loss": summary.get("final_eval_loss"),
            "train_seconds": summary.get("train_seconds"),
            "metrics": ev.metrics,
        }

    def _report(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.bench.collect import comparisons
        from fedloom.bench.report import write_report

        paired = comparisons(ctx, cfg)
        return write_report(ctx.out, cfg, ctx.folder, paired) | {
            "paired": [c.as_dict() for c in paired]
        }
