"""A row's training (one phase per strategy step) and its per-item scores and membership attack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedloom.experiment.evaluate import Scorer, record_id
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.pipeline.runner import (
    PipelineConfig,
    StageContext,
)
from fedloom.synth.common import read_jsonl
from fedloom.synth.fedgc.budget import FedGCError
from fedloom.synth.fedgc.config import FedGCConfig, Variant
from fedloom.synth.fedgc.mia import mia_auc, mia_best_accuracy
from fedloom.synth.fedgc.rows import _records
from fedloom.synth.fedgc.strategy import STRATEGIES


def train_stage(
    ctx: StageContext, cfg: PipelineConfig, algo: str, v: Variant, alpha: float
) -> dict[str, Any]:
    p: FedGCConfig = cfg.params
    data = ctx.folder_of(f"data-a{alpha}")
    gen_dir = ctx.folder_of(f"gen-{v.gen_key(alpha)}") if v.total > 0 else None
    phases_by_client = []
    n_generated = 0
    for c in range(p.num_clients):
        priv = [] if v.generated_only else read_jsonl(data / f"private_{c}.jsonl")
        gen = read_jsonl(gen_dir / f"generated_{c}.jsonl") if gen_dir else []
        n_generated += len(gen)
        phases_by_client.append(STRATEGIES[v.strategy](priv, gen) if gen else [("private", priv)])
    n_phases = max(len(ph) for ph in phases_by_client)
    rounds = cfg.train.federation.rounds
    per_phase = phase_rounds(rounds, n_phases)
    init_from: Path | None = None
    summaries = []
    for k in range(n_phases):
        phase = [ph[k][1] if k < len(ph) else [] for ph in phases_by_client]
        sources = client_sources(ctx.folder, phase, f"phase{k}_client", skip_empty=True)
        sources.append(heldout_source(data / "heldout.jsonl"))
        # one schedule over the phases: the same total rounds as `mixed`, the cosine learning
        # rate continuing, and the server state (FedAdam's moments, SCAFFOLD's controls) and
        # clients' states carried from the phase before (clients' optimizers restart every
        # round in every strategy)
        raw: dict[str, Any] = {
            "task": "classify",
            "federation": {
                "algorithm": algo,
                "params": p.algorithm_params.get(algo, {}),
                "rounds": per_phase[k],
                "round_offset": sum(per_phase[:k]),
                "schedule_rounds": rounds,
                "continue_from": None if k == 0 else str(ctx.folder / f"run{k - 1}"),
            },
            # the run's own evaluation is a progress figure (2 records a label); the measured
            # accuracy and loss are the Scorer's below (the base model's cached per pipeline:
            # each run scored the base and its final adapter twice before)
            "eval": {"max_examples": 2},
        }
        res = train_run(
            cfg.train, ctx.folder / f"run{k}", sources, ctx.console,
            num_clients=p.num_clients, overrides=raw,
        )  # fmt: skip
        summaries.append(res.summary)
        init_from = res.adapter
    if init_from is None:
        raise FedGCError(f"{algo}/{v.name}: no training phase ran")
    scored = score_items(ctx, cfg, data, init_from)
    mia = membership_attack(ctx, cfg, data, init_from)
    return {
        "algorithm": algo,
        "variant": v.name,
        "alpha": alpha,
        "phases": n_phases,
        "phase_rounds": per_phase,
        **scored,
        "generated_kept": n_generated,
        "client_sizes": [s_["client_sizes"] for s_ in summaries],
        "mia": mia,
        "train_seconds": sum(s_["train_seconds"] for s_ in summaries),
    }


def phase_rounds(rounds: int, phases: int) -> list[int]:
    """``rounds`` split over ``phases`` consecutive phases, earlier ones taking the remainder
    (5 over 2: [3, 2]); refused when a phase would get none."""
    if phases > rounds:
        raise FedGCError(
            f"{phases} training phases need at least {phases} rounds "
            f"(`train.federation.rounds` is {rounds})"
        )
    return [rounds // phases + (1 if k < rounds % phases else 0) for k in range(phases)]


def score_items(
    ctx: StageContext, cfg: PipelineConfig, data: Path, adapter: Path
) -> dict[str, Any]:
    """Held-out accuracy and loss per item, base (cached once per pipeline) and tuned, in
    ``items/`` for the pooled table; returns their means, the tuned accuracy per true label and
    the seconds each took."""
    held = _records(data / "heldout.jsonl")
    scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
    out: dict[str, Any] = {"scoring_seconds": {}}
    for which, a in (("base", None), ("tuned", adapter)):
        acc = scorer.classify(a, held)
        loss = scorer.heldout(a, held, cfg.train.data.max_seq_len)
        acc.save(ctx.folder / "items" / f"accuracy.{which}.json")
        loss.save(ctx.folder / "items" / f"heldout.{which}.json")
        out["scoring_seconds"][which] = round(acc.seconds + loss.seconds, 1)
        if which == "base":
            out["base_accuracy"] = acc.mean
            continue
        out |= {"accuracy": acc.mean, "heldout_loss": loss.mean, "items": acc.n}
        by: dict[str, list[float]] = {}
        for r in held:
            by.setdefault(f"accuracy[{r.metadata['label']}]", []).append(acc.values[record_id(r)])
        out["accuracy_by_label"] = {k: sum(v) / len(v) for k, v in sorted(by.items())}
    return out


def membership_attack(
    ctx: StageContext, cfg: PipelineConfig, data: Path, adapter: Path
) -> dict[str, Any]:
    """Loss-threshold membership inference: members (clients' private training examples)
    against non-members of the same source."""
    scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
    max_len = cfg.train.data.max_seq_len

    def losses(file: str) -> list[float]:
        return list(scorer.heldout(adapter, _records(data / file), max_len).values.values())

    m, n = losses("mia_members.jsonl"), losses("mia_nonmembers.jsonl")
    return {
        "auc": round(mia_auc(m, n), 4),
        "best_accuracy": round(mia_best_accuracy(m, n), 4),
        "members": len(m),
        "nonmembers": len(n),
    }
