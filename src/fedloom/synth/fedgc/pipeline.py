"""The `fedgc` pipeline: FedGC's study grid at CPU scale, in resumable stages.

    fedloom pipeline configs/fedgc.yaml          (configs/tiny-fedgc.yaml: plumbing)

    data-a<α>         private pool split over clients by Dirichlet(α) on the label; a balanced
                      held-out set; member / non-member sets for membership inference
    gen-<key>         each client writes its budget of examples (budget rule, label allocation,
                      prompt design, guidance, amount): provenance on every record, rejects
                      counted by reason
    <row>.train       a federated run (task: classify) per (algorithm, variant, α); strategy
                      phases run in order, each continuing from the last adapter; then the
                      loss-threshold membership attack on its members vs non-members
    table             grid and ablation tables, plot

Task: MMLU questions → MMLU's four subject groups (`mmlu_topics`), accuracy by label
log-likelihood on a balanced held-out set (`task: classify`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.data.sources import load_source_report
from fedloom.experiment.evaluate import Scorer
from fedloom.experiment.guards import require_disjoint
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.generation import GenerationConfig, GeneratorConfig, read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.settings import _require
from fedloom.synth.common import normalise, read_jsonl, write_jsonl
from fedloom.synth.fedgc.budget import BUDGETS, FedGCError, allocate_labels
from fedloom.synth.fedgc.guidance import (
    GUIDANCE,
    LLM_PROMPT_REQUEST,
    PROMPT_DESIGNS,
    guided_prompt,
    task_prompt,
)
from fedloom.synth.fedgc.mia import mia_auc, mia_best_accuracy
from fedloom.synth.fedgc.strategy import STRATEGIES
from fedloom.utils import rng_for

AXES = ("budget", "label_allocation", "prompt", "guidance", "strategy")


@dataclass
class Variant:
    name: str
    budget: str
    label_allocation: str
    prompt: str
    guidance: str
    strategy: str
    total: int
    """Generated examples over all clients (0: no FedGC)."""
    generated_only: bool = False

    def gen_key(self, alpha: float) -> str:
        return f"a{alpha}-{self.budget}-{self.label_allocation}-{self.prompt}-{self.guidance}-{self.total}"


@dataclass
class FedGCConfig:
    source: str = "mmlu_topics"
    num_clients: int = 10
    private_per_client: int = 30
    heldout_per_label: int = 25
    alphas: list[float] = field(default_factory=lambda: [0.1, 0.5])
    algorithms: list[str] = field(default_factory=lambda: ["fedavg", "fedprox", "scaffold"])
    algorithm_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"fedprox": {"mu": 0.01}}
    )
    total: int = 300
    budget: str = "equal"
    label_allocation: str = "fill"
    prompt: str = "multi"
    guidance: str = "both"
    strategy: str = "mixed"
    ablations: list[str] = field(
        default_factory=lambda: [
            "budget",
            "prompt",
            "guidance",
            "strategy",
            "amount",
            "generated-only",
        ]
    )
    amounts: list[int] = field(default_factory=lambda: [100, 600])
    ablation_alpha: float = 0.1
    ablation_algorithm: str = "fedavg"
    k: int = 3
    """Real examples shown by `real` / `both` guidance."""
    task_item: str = "exam question"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=60, temperature=0.8, batch_size=8)
    )
    llm_prompts_per_label: int = 4
    min_words: int = 5
    max_words: int = 80
    mia_examples: int = 40

    def __post_init__(self) -> None:
        from fedloom.algorithms import ALGORITHMS

        _require(self.num_clients >= 2, "`fedgc.num_clients` must be >= 2")
        _require(
            bool(self.alphas) and all(a > 0 for a in self.alphas), "`fedgc.alphas` must be > 0"
        )
        bad = [a for a in [*self.algorithms, self.ablation_algorithm] if a not in ALGORITHMS]
        _require(not bad, f"`fedgc.algorithms`: unknown {bad}; choose from {sorted(ALGORITHMS)}")
        _require(self.budget in BUDGETS, f"`fedgc.budget` must be one of {sorted(BUDGETS)}")
        _require(
            self.label_allocation in ("uniform", "fill"),
            "`fedgc.label_allocation`: uniform or fill",
        )
        _require(self.prompt in PROMPT_DESIGNS, f"`fedgc.prompt` must be one of {PROMPT_DESIGNS}")
        _require(self.guidance in GUIDANCE, f"`fedgc.guidance` must be one of {GUIDANCE}")
        _require(
            self.strategy in STRATEGIES, f"`fedgc.strategy` must be one of {sorted(STRATEGIES)}"
        )
        known = {
            "budget",
            "prompt",
            "guidance",
            "strategy",
            "amount",
            "generated-only",
            "label_allocation",
        }
        bad = [a for a in self.ablations if a not in known]
        _require(not bad, f"`fedgc.ablations`: unknown {bad}; choose from {sorted(known)}")
        _require(
            self.total >= 1 and all(a >= 1 for a in self.amounts), "generated amounts must be >= 1"
        )
        _require(
            self.ablation_alpha in self.alphas, "`fedgc.ablation_alpha` must be one of `alphas`"
        )
        _require(
            self.private_per_client >= 2 and self.heldout_per_label >= 1, "sizes must be positive"
        )

    def default(self) -> Variant:
        return Variant(
            "fedgc",
            self.budget,
            self.label_allocation,
            self.prompt,
            self.guidance,
            self.strategy,
            self.total,
        )

    def variants(self) -> list[Variant]:
        """The ablation variants: one axis changed from the default at a time."""
        d = self.default()
        out: list[Variant] = []
        choices = {
            "budget": sorted(BUDGETS),
            "label_allocation": ["uniform", "fill"],
            "prompt": list(PROMPT_DESIGNS),
            "guidance": list(GUIDANCE),
            "strategy": sorted(STRATEGIES),
        }
        for axis in self.ablations:
            if axis in choices:
                for c in choices[axis]:
                    if c != getattr(d, axis):
                        out.append(replace(d, name=f"{axis}={c}", **{axis: c}))  # type: ignore[arg-type]
            elif axis == "amount":
                out += [
                    replace(d, name=f"amount={n}", total=n) for n in self.amounts if n != d.total
                ]
            elif axis == "generated-only":
                out.append(replace(d, name="generated-only", generated_only=True))
        return out


@register_pipeline
class FedGC(PipelineMethod):
    name = "fedgc"
    config_cls = FedGCConfig

    def row_names(self, cfg: PipelineConfig) -> list[str]:
        return [row_name(a, v.name, al) for a, v, al in self._rows(cfg)]

    def _rows(self, cfg: PipelineConfig) -> list[tuple[str, Variant, float]]:
        """(algorithm, variant, α) of every row: the grid, then the ablations."""
        p: FedGCConfig = cfg.params
        none = replace(p.default(), name="no-fedgc", total=0)
        rows: list[tuple[str, Variant, float]] = []
        for alpha in p.alphas:
            for algo in p.algorithms:
                rows += [(algo, none, alpha), (algo, p.default(), alpha)]
        rows += [(p.ablation_algorithm, v, p.ablation_alpha) for v in p.variants()]
        return rows

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: FedGCConfig = cfg.params
        rows = self._rows(cfg)
        st = [
            Stage(f"data-a{a}", partial(self._data, cfg=cfg, alpha=a), {"alpha": a})
            for a in p.alphas
        ]
        keys: dict[str, Variant] = {}
        for _, v, alpha in rows:
            if v.total > 0:
                keys.setdefault(v.gen_key(alpha), v)
        for key, v in keys.items():
            alpha = float(key.split("-")[0][1:])
            st.append(
                Stage(f"gen-{key}", partial(self._generate, cfg=cfg, v=v, alpha=alpha), asdict(v))
            )
        seen = set()
        for algo, v, alpha in rows:
            name = row_name(algo, v.name, alpha)
            if name in seen:
                continue
            seen.add(name)
            st.append(
                Stage(
                    f"{name}.train",
                    partial(self._train, cfg=cfg, algo=algo, v=v, alpha=alpha),
                    asdict(v) | {"algorithm": algo, "alpha": alpha},
                )
            )
        return st

    # -- data -----------------------------------------------------------------------------------

    def _data(self, ctx: StageContext, cfg: PipelineConfig, alpha: float) -> dict[str, Any]:
        from fedloom.data.partition import partition

        p: FedGCConfig = cfg.params
        loaded, _ = load_source_report(p.source)
        recs = [r for r in loaded if isinstance(r, InstructionRecord) and "label" in r.metadata]
        rng_for(cfg.seed, "fedgc-data").shuffle(recs)  # the same pool for every α
        labels = sorted({str(r.metadata["label"]) for r in recs})
        held: list[InstructionRecord] = []
        per: Counter[str] = Counter()
        rest: list[InstructionRecord] = []
        for r in recs:
            lab = str(r.metadata["label"])
            if per[lab] < p.heldout_per_label:
                per[lab] += 1
                held.append(r)
            else:
                rest.append(r)
        n_priv = p.num_clients * p.private_per_client
        nonmembers = rest[n_priv : n_priv + p.mia_examples]
        pool = rest[:n_priv]
        parts = partition(
            "dirichlet",
            [r.metadata for r in pool],
            p.num_clients,
            key="label",
            seed=cfg.seed,
            alpha=alpha,
            min_examples=2,
        )

        def row(r: InstructionRecord, **extra: Any) -> dict[str, Any]:
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

        counts = []
        for c, idx in enumerate(parts):
            write_jsonl(ctx.folder / f"private_{c}.jsonl", [row(pool[i]) for i in idx])
            counts.append(dict(Counter(str(pool[i].metadata["label"]) for i in idx)))
        write_jsonl(ctx.folder / "heldout.jsonl", [row(r, origin="heldout") for r in held])
        members = [pool[i] for idx in parts for i in idx][: p.mia_examples]
        write_jsonl(ctx.folder / "mia_members.jsonl", [row(r) for r in members])
        write_jsonl(
            ctx.folder / "mia_nonmembers.jsonl", [row(r, origin="nonmember") for r in nonmembers]
        )
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

    def _generate(
        self, ctx: StageContext, cfg: PipelineConfig, v: Variant, alpha: float
    ) -> dict[str, Any]:
        from fedloom.generation import build_generator, run_job

        p: FedGCConfig = cfg.params
        data = ctx.folder_of(f"data-a{alpha}")
        labels: list[str] = ctx.summary_of(f"data-a{alpha}")["labels"]
        private = [read_jsonl(data / f"private_{c}.jsonl") for c in range(p.num_clients)]
        # generated examples are framed exactly as the private ones (the source's prompt)
        first = next(r["instruction"] for rows in private for r in rows)
        frame = first[: len(first) - len(_question(first))]
        budgets = BUDGETS[v.budget](v.total, [len(rows) for rows in private])
        gen = build_generator(p.generator)
        llm_prompts: dict[str, list[str]] = {}
        if v.prompt == "llm":  # the generator writes the task prompts once per label
            asks = [
                (f"p-{lab}-{j}", LLM_PROMPT_REQUEST.format(task_item=p.task_item, label=lab))
                for lab in labels
                for j in range(p.llm_prompts_per_label)
            ]
            run_job(
                gen, asks, replace(p.generation, seed=cfg.seed), ctx.folder / "llm_prompts.jsonl"
            )
            asked = read_job(ctx.folder / "llm_prompts.jsonl", [i for i, _ in asks])
            for pid, reply in asked.texts().items():
                text = reply.strip().splitlines()
                if text and len(text[0].split()) >= 4:
                    llm_prompts.setdefault(pid.split("-")[1], []).append(text[0].strip())
        items: list[tuple[str, str]] = []
        meta: dict[str, dict[str, Any]] = {}
        alloc_all = []
        for c, rows in enumerate(private):
            have = Counter(r["label"] for r in rows)
            alloc = allocate_labels(
                budgets[c], {lab: have.get(lab, 0) for lab in labels}, v.label_allocation
            )
            alloc_all.append(alloc)
            for lab, n in alloc.items():
                mine = [r["instruction"] for r in rows if r["label"] == lab]
                for j in range(n):
                    rng = rng_for(cfg.seed, "fedgc-gen", v.gen_key(alpha), c, lab, j)
                    guidance = v.guidance
                    if guidance != "prompt" and not mine:  # no real example of this label here
                        guidance = "prompt"
                    tp = (
                        task_prompt(v.prompt, lab, p.task_item, rng, llm_prompts)
                        if (v.prompt != "llm" or llm_prompts.get(lab))
                        else task_prompt("single", lab, p.task_item, rng)
                    )
                    ex = (
                        [_question(e) for e in rng.sample(mine, min(p.k, len(mine)))]
                        if guidance != "prompt"
                        else []
                    )
                    pid = f"c{c}-{lab}-{j}"
                    items.append((pid, guided_prompt(guidance, tp, ex, p.task_item)))
                    meta[pid] = {
                        "client": c,
                        "label": lab,
                        "guidance": guidance,
                        "examples": len(ex),
                    }
        (ctx.folder / "prompts.json").write_text(
            json.dumps({pid: {"prompt": pr, **meta[pid]} for pid, pr in items}, ensure_ascii=False)
        )
        rep = run_job(
            gen, items, replace(p.generation, seed=cfg.seed), ctx.folder / "generations.jsonl"
        )
        held = {normalise(_question(r["instruction"])) for r in read_jsonl(data / "heldout.jsonl")}
        held |= {
            normalise(_question(r["instruction"]))
            for r in read_jsonl(data / "mia_nonmembers.jsonl")
        }
        real = {normalise(_question(r["instruction"])) for rows in private for r in rows}
        rejects: Counter[str] = Counter()
        seen: set[str] = set()
        per_client: list[list[dict[str, Any]]] = [[] for _ in private]
        job = read_job(ctx.folder / "generations.jsonl", meta)
        if job.failed:
            rejects["generation_failed"] += len(job.failed)
        for r in job.ok:
            q = parse_generated(r["generations"][0]["text"], p.min_words, p.max_words)
            if q is None:
                rejects["unparseable_or_length"] += 1
                continue
            k = normalise(q)
            if k in held:
                rejects["an_evaluation_item"] += 1
                continue
            if k in real:
                rejects["copy_of_a_real_example"] += 1
                continue
            if k in seen:
                rejects["duplicate"] += 1
                continue
            seen.add(k)
            m = meta[r["id"]]
            per_client[int(m["client"])].append(
                {
                    "instruction": frame + q,
                    "response": m["label"],
                    "label": m["label"],
                    "labels": labels,
                    "domain": m["label"],
                    "origin": "generated",
                    "prompt_id": r["id"],
                    "generator": r.get("generator"),
                    "guidance": m["guidance"],
                    "variant": v.gen_key(alpha),
                }
            )
        for c, rows in enumerate(per_client):
            write_jsonl(ctx.folder / f"generated_{c}.jsonl", rows)
        summary = {
            "budgets": budgets,
            "label_allocation": alloc_all,
            "asked": len(items),
            "generated": rep.generated,
            "kept": sum(map(len, per_client)),
            "kept_by_client": [len(x) for x in per_client],
            "rejected": dict(rejects),
            "llm_prompts": {k: len(v_) for k, v_ in llm_prompts.items()},
            "tokens_per_second": round(rep.tokens_per_second, 1),
        }
        ctx.console.print(summary)
        return summary

    # -- training and evaluation ----------------------------------------------------------------

    def _train(
        self, ctx: StageContext, cfg: PipelineConfig, algo: str, v: Variant, alpha: float
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
            phases_by_client.append(
                STRATEGIES[v.strategy](priv, gen) if gen else [("private", priv)]
            )
        n_phases = max(len(ph) for ph in phases_by_client)
        rounds = cfg.train.federation.rounds
        init_from: Path | None = None
        summaries = []
        for k in range(n_phases):
            phase = [ph[k][1] if k < len(ph) else [] for ph in phases_by_client]
            sources = client_sources(ctx.folder, phase, f"phase{k}_client", skip_empty=True)
            sources.append(heldout_source(data / "heldout.jsonl"))
            raw: dict[str, Any] = {
                "task": "classify",
                "federation": {
                    "algorithm": algo,
                    "params": p.algorithm_params.get(algo, {}),
                    "rounds": max(1, rounds // n_phases),
                },
                "eval": {"max_examples": p.heldout_per_label},
            }
            if init_from is not None:
                raw["lora"] = {"init_from": str(init_from)}
            res = train_run(
                cfg.train, ctx.folder / f"run{k}", sources, ctx.console,
                num_clients=p.num_clients, overrides=raw,
            )  # fmt: skip
            summaries.append(res.summary)
            init_from = res.adapter
        last = summaries[-1]
        if init_from is None:
            raise FedGCError(f"{algo}/{v.name}: no training phase ran")
        self._score_items(ctx, cfg, data, init_from)
        mia = self._mia(ctx, cfg, data, init_from)
        return {
            "algorithm": algo,
            "variant": v.name,
            "alpha": alpha,
            "phases": n_phases,
            "base_accuracy": summaries[0]["base_classify"]["accuracy"],
            "accuracy": last["final_classify"]["accuracy"],
            "accuracy_by_label": {
                k: val for k, val in last["final_classify"].items() if k.startswith("accuracy[")
            },
            "heldout_loss": last["final_eval_loss"]["all"],
            "generated_kept": n_generated,
            "client_sizes": [s_["client_sizes"] for s_ in summaries],
            "mia": mia,
            "train_seconds": sum(s_["train_seconds"] for s_ in summaries),
        }

    def _score_items(
        self, ctx: StageContext, cfg: PipelineConfig, data: Path, adapter: Path
    ) -> None:
        """Held-out accuracy and loss per item, base (cached once per pipeline) and tuned, in
        ``items/`` for the pooled table."""
        held = _records(data / "heldout.jsonl")
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
        for which, a in (("base", None), ("tuned", adapter)):
            scorer.classify(a, held).save(ctx.folder / "items" / f"accuracy.{which}.json")
            scorer.heldout(a, held, cfg.train.data.max_seq_len).save(
                ctx.folder / "items" / f"heldout.{which}.json"
            )

    def _mia(
        self, ctx: StageContext, cfg: PipelineConfig, data: Path, adapter: Path
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

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.synth.fedgc.report import write_report

        return write_report(ctx, cfg, sorted(set(self.row_names(cfg))))


def _records(path: Path) -> list[InstructionRecord]:
    """Classification records (label and label set in the metadata) from a data stage's file."""
    return [
        InstructionRecord(
            r["instruction"], r["response"], metadata={"label": r["label"], "labels": r["labels"]}
        )
        for r in read_jsonl(path)
    ]


def row_name(algo: str, variant: str, alpha: float) -> str:
    return f"{algo}-{variant}-a{alpha}"


def _question(instruction: str) -> str:
    """The question inside a topic-classification prompt (what the generator is shown)."""
    return instruction.split("Question:", 1)[-1].strip()


def parse_generated(text: str, min_words: int, max_words: int) -> str | None:
    """One generated example: the reply's first substantial line, list marks and a leading
    "Question:" stripped; None when too short or too long."""
    import re

    for line in text.strip().splitlines():
        q = (
            re.sub(r"^\s*(?:[-*•]|\d+[.)]|(?:exam\s+)?question\s*\d*\s*:)\s*", "", line, flags=re.I)
            .strip()
            .strip("\"'*")
        )
        if not q or q.endswith(":") or re.match(r"^(sure|certainly|here('s| is))\b", q, re.I):
            continue
        n = len(q.split())
        return q if min_words <= n <= max_words else None
    return None
