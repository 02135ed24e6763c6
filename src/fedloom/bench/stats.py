"""Per-client statistics of a federation and its diversity plots (FedLLM-Bench §4).

``fedloom data stats NAME --out DIR`` prints the table and writes four PNGs: client sizes
(quantity), instruction/response lengths, languages per client, and a 2-D projection of the
instructions' sentence embeddings coloured by client. Lengths are counted in tokens of the
run's tokenizer (SmolLM2's by default); languages come from the record's ``language`` metadata
or fedloom's guesser.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.bench.federations import FederationSpec
from fedloom.data.language import detect_language
from fedloom.data.schema import ConversationRecord, InstructionRecord, PreferenceRecord, Record
from fedloom.utils import rng_for


def record_texts(r: Record) -> tuple[str, str]:
    """(instruction, response) of a training record: a conversation's user turns and
    assistant turns joined; a preference pair's prompt and chosen answer."""
    if isinstance(r, InstructionRecord):
        return (f"{r.instruction}\n{r.input}" if r.input else r.instruction), r.response
    if isinstance(r, ConversationRecord):
        user = "\n".join(m["content"] for m in r.messages if m["role"] == "user")
        bot = "\n".join(m["content"] for m in r.messages if m["role"] == "assistant")
        return user, bot
    if isinstance(r, PreferenceRecord):
        return r.prompt, r.chosen
    raise TypeError(f"no instruction/response in a {type(r).__name__}")


def mean_sd(values: list[float]) -> list[float]:
    """[mean, sample sd] (sd 0 for fewer than two values)."""
    if not values:
        return [0.0, 0.0]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return [round(statistics.fmean(values), 2), round(sd, 2)]


@dataclass
class FederationStats:
    name: str
    clients: list[dict[str, Any]]
    """Per client: id, label (the natural key's value, if any), n, lengths, languages."""
    summary: dict[str, Any]
    heldout: int
    skipped: dict[str, int] = field(default_factory=dict)
    """What the sources' filters and loaders left out (reason -> count)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "heldout": self.heldout,
            "skipped": self.skipped,
            "clients": self.clients,
        }


def _language(r: Record, text: str) -> str:
    return str(r.metadata.get("language") or detect_language(text))


def compute_stats(
    spec: FederationSpec, seed: int = 0, tokenizer: Any = None
) -> tuple[FederationStats, list[list[Record]]]:
    """The federation's clients (records, before tokenisation) and their statistics."""
    from fedloom.config import config_from_dict
    from fedloom.data.federated import assign_clients, split_records
    from fedloom.data.sources import LoadReport

    cfg = config_from_dict(spec.sections() | {"seed": seed})
    reports: list[LoadReport] = []
    from fedloom.tasks import get_task

    split = split_records(cfg.data, seed, reports, get_task(cfg.task).to_record)
    owners = assign_clients(split, cfg.data, cfg.partition, seed)
    clients = [[split.train[i] for i in c] for c in owners]
    key = cfg.partition.key if cfg.partition.strategy in ("natural", "dirichlet") else None

    def n_tokens(text: str) -> int:
        if tokenizer is None:
            return len(text.split())
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    rows: list[dict[str, Any]] = []
    all_ins: list[float] = []
    all_res: list[float] = []
    langs: Counter[str] = Counter()
    for cid, recs in enumerate(clients):
        ins: list[float] = []
        res: list[float] = []
        lang: Counter[str] = Counter()
        for r in recs:
            i, o = record_texts(r)
            ins.append(float(n_tokens(i)))
            res.append(float(n_tokens(o)))
            lang[_language(r, i)] += 1
        all_ins += ins
        all_res += res
        langs.update(lang)
        rows.append(
            {
                "client": cid,
                "label": str(recs[0].metadata.get(key)) if key and recs else None,
                "n": len(recs),
                "instruction_length": mean_sd(ins),
                "response_length": mean_sd(res),
                "languages": dict(lang.most_common()),
            }
        )
    sizes = [float(r["n"]) for r in rows]
    skipped: dict[str, int] = {}
    for rep in reports:
        for reason, n in rep.skipped.items():
            skipped[f"{rep.source}: {reason}"] = n
    summary = {
        "clients": len(rows),
        "samples": int(sum(sizes)),
        "per_client": mean_sd(sizes),
        "per_client_range": [int(min(sizes)), int(max(sizes))] if sizes else [0, 0],
        "instruction_length": mean_sd(all_ins),
        "response_length": mean_sd(all_res),
        "languages": dict(langs.most_common()),
        "length_unit": "tokens" if tokenizer is not None else "words",
        "published": spec.published,
    }
    stats = FederationStats(spec.name, rows, summary, len(split.heldout), skipped)
    return stats, clients


# -- plots ------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quantity(stats: FederationStats, path: Path) -> None:
    plt = _plt()
    sizes = sorted((c["n"] for c in stats.clients), reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(len(sizes)), sizes, width=1.0, color="#4477aa")
    if sizes and max(sizes) > 20 * max(min(sizes), 1):
        ax.set_yscale("log")
    m, sd = stats.summary["per_client"]
    ax.set_title(f"{stats.name}: examples per client ({m:g} ± {sd:g}), sorted")
    ax.set_xlabel("client (by size)")
    ax.set_ylabel("examples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lengths(stats: FederationStats, clients: list[list[Record]], path: Path) -> None:
    plt = _plt()
    unit = stats.summary["length_unit"]
    ins = [float(c["instruction_length"][0]) for c in stats.clients if c["n"]]
    res = [float(c["response_length"][0]) for c in stats.clients if c["n"]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    top = max([*ins, *res, 1.0])
    bins = [math.exp(math.log(1) + k * math.log(top + 1) / 30) for k in range(31)]
    ax.hist(ins, bins=bins, alpha=0.6, label="instruction")
    ax.hist(res, bins=bins, alpha=0.6, label="response")
    ax.set_xscale("log")
    ax.set_title(f"{stats.name}: mean length per client ({unit})")
    ax.set_xlabel(unit)
    ax.set_ylabel("clients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_languages(stats: FederationStats, path: Path, top: int = 8) -> None:
    plt = _plt()
    overall = list(stats.summary["languages"])[:top]
    shown = sorted(stats.clients, key=lambda c: -c["n"])[:40]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bottom = [0.0] * len(shown)
    for lang in [*overall, "other"]:
        vals = []
        for c in shown:
            n = max(c["n"], 1)
            k = (
                sum(v for lg, v in c["languages"].items() if lg not in overall)
                if lang == "other"
                else c["languages"].get(lang, 0)
            )
            vals.append(k / n)
        if any(vals):
            ax.bar(range(len(shown)), vals, bottom=bottom, label=lang, width=0.9)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_title(f"{stats.name}: language share per client (largest {len(shown)})")
    ax.set_xlabel("client (by size)")
    ax.set_ylabel("share")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def embedding_projection(
    clients: list[list[Record]],
    embedder: str = "minilm",
    max_clients: int = 8,
    per_client: int = 40,
    seed: int = 0,
) -> tuple[list[list[float]], list[int]]:
    """2-D PCA of the instructions' embeddings: up to ``per_client`` instructions of each of
    the ``max_clients`` largest clients. Returns (points, client of each point)."""
    from sklearn.decomposition import PCA

    from fedloom.embed import get_embedder

    largest = sorted(range(len(clients)), key=lambda c: -len(clients[c]))[:max_clients]
    texts, owner = [], []
    for c in largest:
        recs = list(clients[c])
        rng_for(seed, "stats-embed", c).shuffle(recs)
        for r in recs[:per_client]:
            texts.append(record_texts(r)[0][:1000])
            owner.append(c)
    if len(texts) < 3:
        return [], []
    emb = get_embedder(embedder, texts).encode(texts)
    pts = PCA(n_components=2, random_state=seed).fit_transform(emb)
    return [[float(x), float(y)] for x, y in pts], owner


def plot_embedding(
    stats: FederationStats, points: list[list[float]], owner: list[int], path: Path
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    labels = {c["client"]: c["label"] for c in stats.clients}
    for c in sorted(set(owner)):
        xs = [p[0] for p, o in zip(points, owner, strict=True) if o == c]
        ys = [p[1] for p, o in zip(points, owner, strict=True) if o == c]
        ax.scatter(xs, ys, s=9, alpha=0.7, label=labels.get(c) or f"client {c}")
    ax.set_title(f"{stats.name}: instruction embeddings (PCA)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_stats(
    spec: FederationSpec, out: Path, seed: int = 0, tokenizer: Any = None, embedder: str = "minilm"
) -> FederationStats:
    """Compute, save ``stats.json`` and the four plots in ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    stats, clients = compute_stats(spec, seed, tokenizer)
    plot_quantity(stats, out / "quantity.png")
    plot_lengths(stats, clients, out / "lengths.png")
    plot_languages(stats, out / "languages.png")
    points, owner = embedding_projection(clients, embedder, seed=seed)
    if points:
        plot_embedding(stats, points, owner, out / "embedding.png")
    (out / "stats.json").write_text(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
    return stats
