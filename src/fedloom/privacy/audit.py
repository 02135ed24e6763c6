"""Privacy audit with canaries (Carlini et al. 2019, "The Secret Sharer").

Random secrets are planted in one client's training data, several copies each:

    user:       What is Ada Quint's account number?
    assistant:  Ada Quint's account number is 493027.

After training, for each canary:
- **exposure** = log2(|R| + 1) − log2(rank), where rank is the true secret's position (1 = most
  likely) among itself and |R| random candidate secrets of the same format, ordered by the
  model's log-likelihood of the whole answer. A model that has not seen the canary ranks it
  uniformly (expected exposure ≈ 1 bit); full memorisation gives log2(|R| + 1).
- **extraction**: greedy decoding after the prompt and "Ada Quint's account number is" produces
  the secret exactly.

`fedloom audit CONFIG` runs the same federated job once per setting (no DP, client DP-SGD at
each ε, central DP) with the same canaries in the same client, and writes ``audit.json``,
``audit.md`` (table) and ``audit.png`` (exposure and held-out loss per setting).
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from rich.console import Console
from transformers import PreTrainedTokenizerBase

from fedloom.config import check_run_config
from fedloom.data.schema import InstructionRecord
from fedloom.data.template import collate, prompt_text, tokenize_example
from fedloom.settings import CentralDPConfig, ClientDPConfig, PrivacyConfig, RunConfig
from fedloom.train.objectives import sequence_logps

FIRST = ["Ada", "Boris", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
LAST = ["Quint", "Varga", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Rossi", "Novak", "Haddad"]


@dataclass(frozen=True)
class Canary:
    name: str
    secret: str

    @property
    def question(self) -> str:
        return f"What is {self.name}'s account number?"

    @property
    def lead(self) -> str:
        """The answer up to the secret: the extraction prompt's tail."""
        return f"{self.name}'s account number is"

    def answer(self, secret: str | None = None) -> str:
        return f"{self.lead} {self.secret if secret is None else secret}."

    def record(self, secret: str | None = None) -> InstructionRecord:
        return InstructionRecord(
            self.question, self.answer(secret), metadata={"domain": "canary", "canary": True}
        )


def random_secret(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(digits))


def make_canaries(n: int, digits: int, seed: int) -> list[Canary]:
    rng = random.Random(f"canaries:{seed}")
    names = rng.sample([f"{f} {la}" for f in FIRST for la in LAST], n)
    return [Canary(name, random_secret(rng, digits)) for name in names]


def plant(fed: Any, canaries: Sequence[Canary], client: int, repeats: int) -> int:
    """Append ``repeats`` tokenised copies of each canary to ``client``'s shard; returns the
    number of copies planted."""
    tok, max_len = fed.loaded.tokenizer, fed.cfg.data.max_seq_len
    if not 0 <= client < len(fed.data.clients):
        raise ValueError(f"canary client {client} is not in [0, {len(fed.data.clients)})")
    for c in canaries:
        ex = tokenize_example(tok, c.record(), max_len)
        if ex is None or ex.truncated:
            raise ValueError(f"canary {c.name!r} does not fit data.max_seq_len = {max_len}")
    fed.data.add(client, [c.record() for c in canaries for _ in range(repeats)], tok, max_len)
    return len(canaries) * repeats


@torch.no_grad()
def answer_logps(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    canary: Canary,
    secrets: Sequence[str],
    max_len: int,
    device: torch.device,
    batch_size: int = 32,
) -> list[float]:
    """log p(answer with each secret | question), summed over the answer's tokens."""
    pad = int(tokenizer.pad_token_id)
    out: list[float] = []
    model.eval()
    for i in range(0, len(secrets), batch_size):
        exs = [
            tokenize_example(tokenizer, canary.record(s), max_len)
            for s in secrets[i : i + batch_size]
        ]
        batch = {k: v.to(device) for k, v in collate(exs, pad).items()}  # type: ignore[arg-type]
        logp, _ = sequence_logps(model, batch, None)
        out += logp.double().tolist()
    return out


def exposure(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    canary: Canary,
    candidates: int,
    max_len: int,
    device: torch.device,
    seed: int,
) -> tuple[float, int]:
    """(exposure in bits, rank of the true secret among it and ``candidates`` random ones)."""
    rng = random.Random(f"candidates:{seed}:{canary.name}")
    others: set[str] = set()
    while len(others) < candidates:
        s = random_secret(rng, len(canary.secret))
        if s != canary.secret:
            others.add(s)
    scores = answer_logps(
        model, tokenizer, canary, [canary.secret, *sorted(others)], max_len, device
    )
    rank = 1 + sum(s > scores[0] for s in scores[1:])
    return math.log2(candidates + 1) - math.log2(rank), rank


@torch.no_grad()
def extracted(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, canary: Canary, device: torch.device
) -> bool:
    """Greedy decoding after the question and the answer's lead reproduces the secret."""
    from fedloom.generation import GenerationConfig, LocalGenerator

    text = prompt_text(tokenizer, InstructionRecord(canary.question, "")) + canary.lead
    cfg = GenerationConfig(max_new_tokens=2 * len(canary.secret) + 2, chat=False, batch_size=1)
    completion = LocalGenerator(model, tokenizer, device).generate([text], cfg)[0][0].text
    digits = "".join(ch for ch in completion if ch.isdigit())
    return digits.startswith(canary.secret)


def measure(fed: Any, canaries: Sequence[Canary], candidates: int, seed: int) -> dict[str, Any]:
    """Exposure and extraction of every canary by ``fed.model`` as it is loaded now."""
    tok, dev, max_len = fed.loaded.tokenizer, fed.loaded.device, fed.cfg.data.max_seq_len
    per: list[dict[str, Any]] = []
    for c in canaries:
        exp, rank = exposure(fed.model, tok, c, candidates, max_len, dev, seed)
        per.append(
            {
                "name": c.name,
                "exposure": exp,
                "rank": rank,
                "extracted": extracted(fed.model, tok, c, dev),
            }
        )
    return {
        "exposure_mean": statistics.fmean(p["exposure"] for p in per),
        "exposure_max": max(p["exposure"] for p in per),
        "extracted": sum(p["extracted"] for p in per),
        "canaries": per,
    }


@dataclass
class AuditSetting:
    name: str
    privacy: PrivacyConfig
    auto_clip: bool = False
    """Central DP: set C to the median client update norm of the no-DP run before it."""


def default_settings(
    epsilons: Sequence[float], central_noise: float | None, central_clip: float | None
) -> list[AuditSetting]:
    out = [AuditSetting("no DP", PrivacyConfig())]
    for e in epsilons:
        out.append(
            AuditSetting(
                f"client DP ε={e:g}", PrivacyConfig(client_dp=ClientDPConfig(target_epsilon=e))
            )
        )
    if central_noise is not None:
        out.append(
            AuditSetting(
                f"central DP σ={central_noise:g}",
                PrivacyConfig(
                    central_dp=CentralDPConfig(
                        noise_multiplier=central_noise, clip_norm=central_clip or 1.0
                    )
                ),
                auto_clip=central_clip is None,
            )
        )
    return out


def run_audit(
    cfg: RunConfig,
    out: str | Path,
    settings: Sequence[AuditSetting],
    canaries: int = 3,
    repeats: int = 10,
    digits: int = 6,
    candidates: int = 200,
    client: int = 0,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Train once per setting with the same canaries planted in ``client``; measure each. Each
    setting is a stage of the stage runner (``out/<setting>/``, its run in ``run/``): a
    rerun of the same command skips finished settings and redoes a cut-off one."""
    from fedloom.pipeline.runner import Stage, StageContext, run_stages

    console = console or Console()
    out = Path(out)
    cs = make_canaries(canaries, digits, cfg.seed)

    def setting_stage(st: AuditSetting, first: bool) -> Stage:
        def body(ctx: StageContext) -> dict[str, Any]:
            from fedloom.engine.inprocess import Federation, run

            scfg = copy.deepcopy(cfg)
            scfg.privacy = copy.deepcopy(st.privacy)
            norms = [
                n
                for k in ctx.finished()
                for n in _update_norms(ctx.folder_of(k), ctx.summary_of(k))
            ]
            if st.auto_clip and scfg.privacy.central_dp is not None and norms:
                scfg.privacy.central_dp.clip_norm = statistics.median(norms)
            scfg.__post_init__()  # validate the combination (and LoRA dropout off under DP)
            check_run_config(scfg)
            fed = Federation.build(scfg, console)
            planted = plant(fed, cs, client, repeats)
            base = None
            if first:  # the untrained model: what exposure looks like without training
                with fed.model.disable_adapter():
                    base = measure(fed, cs, candidates, cfg.seed)
            shutil.rmtree(ctx.folder / "run", ignore_errors=True)  # a cut-off run starts over
            summary = run(scfg, ctx.folder / "run", console=console, federation=fed)
            m = measure(fed, cs, candidates, cfg.seed)
            priv = summary.get("privacy") or {}
            eps: float | None = None
            if "epsilon_by_client" in priv:
                eps = priv["epsilon_by_client"].get(str(client), 0.0)
            elif "central_dp" in priv:
                eps = priv["central_dp"]["epsilon"]
            row = {
                "setting": st.name,
                "epsilon": eps,
                "delta": (priv.get("central_dp") or {}).get("delta"),
                "clip_norm": (priv.get("central_dp") or {}).get("clip_norm"),
                "heldout_loss": summary["final_eval_loss"]["all"],
                "base_heldout_loss": summary["base_eval_loss"]["all"],
                "rounds_completed": summary["rounds_completed"],
                "planted": planted,
                "run_dir": str(ctx.folder / "run"),
                "no_dp": st.privacy.client_dp is None and st.privacy.central_dp is None,
                **m,
            }
            console.print(
                f"{st.name}: exposure {m['exposure_mean']:.2f} bits (max "
                f"{m['exposure_max']:.2f}), extracted {m['extracted']}/{len(cs)}, held-out loss "
                f"{row['heldout_loss']:.4f}"
            )
            return {"row": row, "base": base}

        slug = st.name.replace(" ", "-").replace("=", "").replace("σ", "sigma").replace("ε", "eps")
        return Stage(slug, body, {"setting": st.name, "privacy": asdict(st.privacy)})

    stages = [setting_stage(st, i == 0) for i, st in enumerate(settings)]
    done = run_stages(out, stages, console)
    first = done[stages[0].name]
    base_row = {"setting": "base model (untrained)", "epsilon": None, **first["base"]}
    result = [base_row, *(done[s.name]["row"] for s in stages)]
    meta = {
        "canaries": [asdict(c) for c in cs],
        "repeats": repeats,
        "candidates": candidates,
        "client": client,
        "max_exposure": math.log2(candidates + 1),
    }
    (out / "audit.json").write_text(json.dumps({"meta": meta, "rows": result}, indent=2))
    (out / "audit.md").write_text(table_markdown(result, meta))
    plot(result, meta, out / "audit.png")
    return result


def _update_norms(stage_folder: Path, summary: dict[str, Any]) -> list[float]:
    """Client update norms of a finished no-DP setting (central DP's clip norm is their
    median)."""
    if not summary["row"].get("no_dp"):
        return []
    norms: list[float] = []
    for line in (stage_folder / "run" / "metrics.jsonl").read_text().splitlines():
        norms += json.loads(line).get("client_update_norm", {}).values()
    return norms


def table_markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"{len(meta['canaries'])} canaries × {meta['repeats']} copies in client {meta['client']}; "
        f"exposure over {meta['candidates']} random candidates (max {meta['max_exposure']:.2f} bits)",
        "",
        "| setting | ε (canary client) | exposure mean | exposure max | extracted | held-out loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        eps = "—" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
        loss = f"{r['heldout_loss']:.4f}" if "heldout_loss" in r else "—"
        lines.append(
            f"| {r['setting']} | {eps} | {r['exposure_mean']:.2f} | {r['exposure_max']:.2f} | "
            f"{r['extracted']}/{len(r['canaries'])} | {loss} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["setting"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.bar(names, [r["exposure_mean"] for r in rows], color="tab:red", alpha=0.8, label="mean")
    a1.scatter(names, [r["exposure_max"] for r in rows], color="black", zorder=3, label="max")
    a1.axhline(meta["max_exposure"], ls="--", color="grey", lw=1, label="full memorisation")
    a1.set_ylabel("canary exposure (bits)")
    a1.legend(fontsize=8)
    trained = [r for r in rows if "heldout_loss" in r]
    a2.bar([r["setting"] for r in trained], [r["heldout_loss"] for r in trained], color="tab:blue")
    lo = min(r["heldout_loss"] for r in trained)
    a2.set_ylim(lo * 0.98, max(r["heldout_loss"] for r in trained) * 1.01)
    a2.set_ylabel("held-out loss (utility)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=25, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("fedloom privacy audit")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
