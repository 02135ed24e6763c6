"""KnowledgeSG (Wang et al., EMNLP 2024): private synthetic data through DP models, refined by a
professional model. The client DP-fine-tunes a *writer* adapter on its private data and sends
the adapter — never data — to the server; the server samples instructions from it, a stronger
professional model rates them and writes the responses, and the refined set trains the final
model. The baselines of the paper run through the same stages (:mod:`fedloom.synth.ksg_methods`).

Stages (``fedloom pipeline configs/knowledgesg.yaml``; a rerun skips finished cells):

1. ``data`` — private pairs (MedMCQA questions with the right option and its explanation) with
   canaries planted, disjoint held-out pairs for evaluation, public seed pairs (MedQA).
2. ``writer-dp`` / ``writer-plain`` — each client trains the writer adapter on its private pairs
   in the writer format (prompt: the task statement; target: ``Instruction: q / Response: a``),
   with client DP-SGD (ε composed over every step of the run) or without.
3. per method ``<m>.write`` — the server's prompts (task statement + examples by the method's
   rule; no private text unless the method is labelled leaky, asserted) sampled at T = 0.7;
   ``<m>.refine`` — parse, drop by reason (no markers, too short, TF-IDF > 0.52 to a shown
   example, duplicates), the professional rates and drops, responses written; data quality and
   canary leakage measured; ``<m>.train`` — the final model on the synthetic set (or, for
   ``non-private``, on the private data); ``<m>.evaluate`` — held-out loss paired against the
   base model, MedMCQA accuracy with every used item left out, free-form answers (judged when a
   judge is configured), canary exposure and extraction.
4. ``table`` — the method table (markdown, JSON, a plot).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord, MultipleChoiceRecord
from fedloom.data.sources import load_source_report
from fedloom.errors import FedloomError
from fedloom.experiment.evaluate import Scorer, heldout_vs_base, suite_vs_base
from fedloom.experiment.guards import require_disjoint, require_none
from fedloom.experiment.train import client_sources, heldout_source, train_run
from fedloom.generation import GenerationConfig, GeneratorConfig, read_job
from fedloom.pipeline.runner import (
    PipelineConfig,
    PipelineMethod,
    Stage,
    StageContext,
    register_pipeline,
)
from fedloom.settings import ClientDPConfig, _require
from fedloom.synth.common import (
    WORD,
    cut_words,
    distinct_n,
    normalise,
    parse_output,
    read_jsonl,
    record_key,
    write_jsonl,
)
from fedloom.synth.ksg_methods import KSG_METHODS, SynthMethod
from fedloom.utils import rng_for

PROMPT_VERSION = "ksg-v1"
TASK = (
    "You write data for training a medical assistant: questions a patient, nurse or medical "
    "student might ask, each with a correct, concise answer from a doctor."
)
RATE_SYSTEM = (
    "You are a senior physician reviewing questions for a medical question-answering dataset."
)
RATE_PROMPT = (
    "Rate the question below from 1 to 10 for its quality (clear, self-contained, answerable) "
    "and its relevance to medicine. Reply with the rating only, in the form [[N]].\n\n"
    "Question: {q}"
)
ANSWER_SYSTEM = (
    "You are a medical doctor. Answer the question accurately and concisely, in a few sentences."
)
FAILURES = (
    "generation_error",
    "no_markers",
    "empty_field",
    "too_short",
    "copied_example",
    "duplicate",
    "near_duplicate",
    "unrated",
    "low_rating",
    "answer_error",
    "empty_answer",
)


class KSGError(FedloomError, ValueError):
    """The KnowledgeSG pipeline cannot run as configured."""


@dataclass
class KSGConfig:
    methods: list[str] = field(default_factory=lambda: list(KSG_METHODS))
    """Which rows of the method table to run (`fedloom pipeline ... --set
    knowledgesg.methods=[dp-ksg]`)."""
    private_source: str = "medmcqa"
    """Multiple-choice records with explanations: question -> right option + explanation."""
    private: int = 300
    """Private pairs, dealt round-robin to the clients."""
    heldout: int = 60
    """Private-like pairs kept out of everything, for the held-out loss and free-form answers."""
    public_source: str = "medqa"
    public: int = 30
    """Public seed pairs the prompts may show (never private)."""
    num_clients: int = 1
    examples: str = "public"
    """For ksg / dp-ksg: `public` (3 public seed pairs in each prompt; faithful), `none` (the
    task statement only) or `private` (3 of the client's private pairs: the original code's
    leak, labelled `leaky` in every output)."""
    k: int = 3
    example_words: int = 60
    synthetic: int = 60
    """Prompts (one sample each) per synthesising method."""
    min_instruction_words: int = 4
    max_example_similarity: float = 0.52
    """Drop an instruction whose TF-IDF cosine (fitted on the two texts) to any shown example
    instruction is above this."""
    near_duplicate: float = 0.9
    """MiniLM cosine at or above which a later instruction repeats an earlier one."""
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(
            max_new_tokens=160, temperature=0.7, top_p=1.0, batch_size=8
        )
    )
    instruction_tokens: int = 48
    """New tokens for writers asked for an instruction only."""
    answer_tokens: int = 160
    dp: ClientDPConfig = field(
        default_factory=lambda: ClientDPConfig(target_epsilon=8.0, max_grad_norm=1.0)
    )
    professional: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(model="qwen2.5-coder-1.5b-instruct")
    )
    """The model that rates and answers (the strongest offline generator by default; an
    OpenAI-compatible endpoint in a real deployment)."""
    min_rating: float = 6.0
    canaries: int = 4
    canary_repeats: int = 5
    canary_digits: int = 6
    exposure_candidates: int = 200
    suite: str | None = "medmcqa"
    suite_limit: int = 60
    freeform: int = 20
    """Held-out questions the final model answers (saved; scored when `judge` is set)."""
    judge: str | None = None
    """`openai` (FEDLOOM_JUDGE_URL / FEDLOOM_JUDGE_MODEL) or a local model name; none: the
    free-form answers are saved unscored."""

    def __post_init__(self) -> None:
        w = "knowledgesg"
        unknown = [m for m in self.methods if m not in KSG_METHODS]
        _require(not unknown, f"`{w}.methods`: unknown {unknown}; choose from {list(KSG_METHODS)}")
        _require(bool(self.methods), f"`{w}.methods` is empty")
        _require(len(set(self.methods)) == len(self.methods), f"`{w}.methods` repeats a method")
        _require(self.private >= 10, f"`{w}.private` must be >= 10")
        _require(self.heldout >= 2, f"`{w}.heldout` must be >= 2")
        _require(self.num_clients >= 1, f"`{w}.num_clients` must be >= 1")
        _require(
            self.private >= 10 * self.num_clients,
            f"`{w}.private` ({self.private}) gives each of {self.num_clients} clients < 10 pairs",
        )
        _require(
            self.examples in ("public", "none", "private"),
            f"`{w}.examples` is {self.examples!r}; use public, none or private",
        )
        _require(1 <= self.k <= self.public, f"`{w}.k` must be in [1, public]")
        _require(self.synthetic >= 1, f"`{w}.synthetic` must be >= 1")
        _require(0 < self.max_example_similarity <= 1, f"`{w}.max_example_similarity` in (0, 1]")
        _require(0 < self.near_duplicate <= 1, f"`{w}.near_duplicate` in (0, 1]")
        _require(self.generation.n == 1, f"`{w}.generation.n` must be 1 (one sample per prompt)")
        _require(1 <= self.min_rating <= 10, f"`{w}.min_rating` must be in [1, 10]")
        _require(self.canaries >= 0 and self.canary_repeats >= 1, f"`{w}.canaries` >= 0")
        _require(self.instruction_tokens >= 8, f"`{w}.instruction_tokens` must be >= 8")
        _require(self.answer_tokens >= 8, f"`{w}.answer_tokens` must be >= 8")
        _require(self.freeform >= 0, f"`{w}.freeform` must be >= 0")
        _require(self.freeform <= self.heldout, f"`{w}.freeform` must be <= `{w}.heldout`")
        _require(
            self.dp.target_epsilon is not None or self.dp.noise_multiplier is not None,
            f"`{w}.dp` needs target_epsilon or noise_multiplier",
        )

    def method_rows(self) -> list[SynthMethod]:
        return [KSG_METHODS[m] for m in self.methods]

    def examples_of(self, m: SynthMethod) -> str:
        return self.examples if m.examples == "config" else m.examples

    def writers(self) -> list[str]:
        found = {m.writer for m in self.method_rows() if m.writer in ("dp", "plain")}
        return [w for w in ("dp", "plain") if w in found]


# --- prompts and parsing ----------------------------------------------------------------------


def writer_prompt(
    examples: list[dict[str, Any]], show: str, words: int = 60, ask: str = "pair"
) -> str:
    """The server's prompt: the task statement, the examples (``show``: pairs or instructions
    only), and the output slot in the marked format (``ask``: a pair, or an instruction only).
    With no examples and ``ask="pair"`` it is the prompt the writer adapter was trained on."""
    parts = [TASK, ""]
    for i, ex in enumerate(examples, 1):
        parts += [f"### Example {i}", f"Instruction: {cut_words(ex['instruction'], words)}"]
        if show == "pair":
            parts.append(f"Response: {cut_words(ex['response'], words)}")
        parts.append("")
    parts.append("### Your turn")
    if ask == "pair":
        parts += ["Write one new pair in the same format:", "Instruction: <the question>"]
        parts.append("Response: <the answer>")
    else:
        parts += ["Write one new question in the same format:", "Instruction: <the question>"]
    return "\n".join(parts)


def writer_target(instruction: str, response: str) -> str:
    return f"Instruction: {instruction}\nResponse: {response}"


_INSTR_ONLY = re.compile(r"[#>*\s]*instruction\s*[*]*\s*:\s*[*]*", re.IGNORECASE)
_STOP = re.compile(r"\n\s*\n|\n\s*(?:#{2,}|response\s*:|instruction\s*:)", re.IGNORECASE)


def parse_instruction(text: str) -> str:
    """The instruction of a writer's output: after an ``Instruction:`` marker, up to a blank
    line, a response or the next marker; with no marker, the first line when it reads as a
    question or request (small instruct models often answer the slot with the bare question).
    Else the failure reason (``no_markers``, ``empty_field``)."""
    m = _INSTR_ONLY.search(text)
    if m is None:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        first = _LEAD.sub("", first).strip()
        if not first or first.startswith("#") or _NOT_A_QUESTION.match(first):
            return "no_markers"
        return first
    rest = text[m.end() :]
    stop = _STOP.search(rest)
    instr = (rest[: stop.start()] if stop else rest).strip().strip("*").strip()
    return instr if instr else "empty_field"


_LEAD = re.compile(r"^(?:\*\*)?(?:question|q|new question)\s*[:.]\s*(?:\*\*)?", re.IGNORECASE)
_NOT_A_QUESTION = re.compile(r"^(?:your |my |the answer|answer|response|example)", re.IGNORECASE)


def parse_rating_reply(text: str) -> float | None:
    """The 1-10 rating in the professional's reply: [[N]], else a lone number; None if none."""
    from fedloom.eval.judges import parse_rating

    r = parse_rating(text)
    if r is None:
        nums = re.findall(r"\b(10|[1-9])(?:\.\d+)?\b", text)
        r = float(nums[0]) if len(nums) == 1 else None
    return r if r is not None and 1 <= r <= 10 else None


# --- privacy and quality figures --------------------------------------------------------------


def canary_leaks(texts: list[str], canaries: list[dict[str, str]]) -> dict[str, Any]:
    """Canaries found in synthetic texts: ``exact`` (the secret appears), ``fuzzy`` (the
    canary's name appears, or a digit run of the secret's length differing in at most one
    digit)."""
    exact, fuzzy = [], []
    joined = "\n".join(texts)
    runs = re.findall(r"\d+", joined)
    low = joined.lower()
    for c in canaries:
        s = c["secret"]
        if s in joined:
            exact.append(c["name"])
            fuzzy.append(c["name"])
            continue
        close = any(
            len(r) == len(s) and sum(a != b for a, b in zip(r, s, strict=True)) <= 1 for r in runs
        )
        if close or c["name"].lower() in low:
            fuzzy.append(c["name"])
    return {"exact": len(exact), "fuzzy": len(fuzzy), "exact_names": exact, "fuzzy_names": fuzzy}


# --- stage 1: data ----------------------------------------------------------------------------


def _mc_pair(r: MultipleChoiceRecord) -> tuple[str, str] | None:
    """(question with its options, right option + explanation); None without an explanation.
    The options stay in the question: many MedMCQA stems ("All of the following except:")
    cannot be answered without them."""
    exp = " ".join(str(r.metadata.get("explanation") or "").split())
    if not exp:
        return None
    question = f"{r.question.strip()} Options: {'; '.join(c.strip() for c in r.choices)}."
    return question, f"{r.choices[r.answer].strip()}. {exp}"


def build_data(cfg: KSGConfig, seed: int, max_words: int, folder: Path) -> dict[str, Any]:
    """Private pairs (with canaries), held-out pairs and public seed pairs; disjointness is
    asserted. ``max_words``: pairs longer than this are skipped (counted) so they fit the
    training sequence length."""
    from fedloom.privacy.audit import make_canaries

    def records(name: str) -> list[Any]:
        recs, rep = load_source_report(name)
        rng = random.Random(f"ksg:{seed}:{name}")
        order = list(recs)
        rng.shuffle(order)
        return order

    skipped: Counter[str] = Counter()
    pairs: list[tuple[Any, str, str]] = []
    for r in records(cfg.private_source):
        if not isinstance(r, MultipleChoiceRecord):
            raise KSGError(f"`private_source` {cfg.private_source!r} is not multiple choice")
        p = _mc_pair(r)
        if p is None:
            skipped["no_explanation"] += 1
        elif len(f"{p[0]} {p[1]}".split()) > max_words:
            skipped["too_long"] += 1
        else:
            pairs.append((r, *p))
        if len(pairs) == cfg.private + cfg.heldout:
            break
    if len(pairs) < cfg.private + cfg.heldout:
        raise KSGError(
            f"{cfg.private_source} offers {len(pairs)} usable pairs; private + heldout needs "
            f"{cfg.private + cfg.heldout} — lower them"
        )
    heldout, private = pairs[: cfg.heldout], pairs[cfg.heldout :]
    public: list[dict[str, Any]] = []
    for r in records(cfg.public_source):
        if isinstance(r, MultipleChoiceRecord):
            public.append({"instruction": r.question.strip(), "response": r.choices[r.answer]})
            public[-1] |= {"id": f"public-{len(public) - 1}", "key": list(record_key(r))}
        elif isinstance(r, InstructionRecord):
            public.append({"instruction": r.instruction, "response": r.response})
            public[-1] |= {"id": f"public-{len(public) - 1}", "key": list(record_key(r))}
        if len(public) == cfg.public:
            break
    if len(public) < cfg.public:
        raise KSGError(f"{cfg.public_source} offers {len(public)} public pairs; lower `public`")

    canaries = make_canaries(cfg.canaries, cfg.canary_digits, seed)
    rows: list[dict[str, Any]] = []
    for i, (r, q, a) in enumerate(private):
        rows.append(
            {"id": f"private-{i}", "instruction": q, "input": "", "response": a}
            | {"client": i % cfg.num_clients, "key": list(record_key(r)), "canary": False}
        )
    for c in canaries:  # planted in client 0's data, `canary_repeats` copies each
        for j in range(cfg.canary_repeats):
            rows.append(
                {"id": f"canary-{c.name}-{j}", "instruction": c.question, "input": ""}
                | {"response": c.answer(), "client": 0, "key": ["canary", c.name], "canary": True}
            )
    held: list[dict[str, Any]] = [
        {"id": f"heldout-{i}", "instruction": q, "input": "", "response": a}
        | {"key": list(record_key(r))}
        for i, (r, q, a) in enumerate(heldout)
    ]
    # evaluation items never in training or generation inputs
    private_keys = {tuple(x["key"]) for x in rows}
    held_keys = {tuple(x["key"]) for x in held}
    require_disjoint(private_keys, held_keys, "held-out pairs in the private data")
    held_q = {normalise(x["instruction"]) for x in held}
    require_disjoint(
        held_q,
        {normalise(x["instruction"]) for x in rows + public},
        "held-out questions in the private data or the public seeds",
    )
    write_jsonl(folder / "private.jsonl", rows)
    write_jsonl(folder / "heldout.jsonl", held)
    write_jsonl(folder / "public.jsonl", public)
    (folder / "canaries.json").write_text(
        json.dumps([{"name": c.name, "secret": c.secret} for c in canaries], indent=1)
    )
    used = sorted(private_keys | held_keys | {tuple(x["key"]) for x in public})
    (folder / "used_keys.json").write_text(json.dumps(used))
    return {
        "private": len(private),
        "canary_rows": len(rows) - len(private),
        "heldout": len(held),
        "public": len(public),
        "per_client": dict(Counter(str(x["client"]) for x in rows)),
        "skipped": dict(skipped),
    }


# --- the pipeline -----------------------------------------------------------------------------


@register_pipeline
class KnowledgeSG(PipelineMethod):
    name = "knowledgesg"
    config_cls = KSGConfig

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        p: KSGConfig = cfg.params
        st = [Stage("data", partial(self._data, cfg=cfg), {"knowledgesg": asdict(p)})]
        for w in p.writers():
            dp = asdict(p.dp) if w == "dp" else None
            st.append(Stage(f"writer-{w}", partial(self._writer, cfg=cfg, which=w), {"dp": dp}))
        for m in p.method_rows():
            settings = asdict(m) | {"examples": p.examples_of(m), "leaky": m.leaky}
            if m.writer is not None:
                st.append(Stage(f"{m.name}.write", partial(self._write, cfg=cfg, m=m), settings))
                prof = asdict(p.professional) if m.answers == "professional" else None
                refine = {"professional": prof, "min_rating": p.min_rating}
                st.append(Stage(f"{m.name}.refine", partial(self._refine, cfg=cfg, m=m), refine))
            st.append(Stage(f"{m.name}.train", partial(self._train, cfg=cfg, m=m), {}))
            st.append(Stage(f"{m.name}.evaluate", partial(self._evaluate, cfg=cfg, m=m), {}))
        return st

    # -- stage bodies --

    def _data(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        # pairs must fit the training sequence (~1.3 tokens a word, plus the template)
        max_words = int((cfg.train.data.max_seq_len - 40) / 1.4)
        summary = build_data(cfg.params, cfg.seed, max_words, ctx.folder)
        ctx.console.print(summary)
        return summary

    def _run(
        self, ctx: StageContext, cfg: PipelineConfig, sources: list[dict[str, Any]], dp: bool
    ) -> dict[str, Any]:
        """Train with ``cfg.train`` on ``sources`` (held-out pairs as the eval set) in
        ``ctx.folder/run``; resumes a cut-off run."""
        p: KSGConfig = cfg.params
        heldout = heldout_source(ctx.folder_of("data") / "heldout.jsonl", "heldout")
        overrides: dict[str, Any] = {
            "federation": {"sample_clients": len(sources)},
            "eval": {"max_examples": p.heldout},
        }
        if dp:
            overrides["privacy"] = {"client_dp": asdict(p.dp)}
        res = train_run(
            cfg.train,
            ctx.folder / "run",
            [*sources, heldout],
            ctx.console,
            num_clients=len(sources),
            overrides=overrides,
        )
        return res.summary

    def _writer(self, ctx: StageContext, cfg: PipelineConfig, which: str) -> dict[str, Any]:
        p: KSGConfig = cfg.params
        rows = read_jsonl(ctx.folder_of("data") / "private.jsonl")
        by_client = [
            [
                {"instruction": writer_prompt([], "pair"), "input": ""}
                | {"response": writer_target(r["instruction"], r["response"])}
                for r in rows
                if r["client"] == c
            ]
            for c in range(p.num_clients)
        ]
        sources = client_sources(ctx.folder, by_client)
        summary = self._run(ctx, cfg, sources, dp=which == "dp")
        privacy = summary.get("privacy") or {}
        return {
            "dp": which == "dp",
            "examples": len(rows),
            "epsilon_by_client": privacy.get("epsilon_by_client"),
            "delta": asdict(p.dp).get("delta") or f"1/n ({len(rows) // p.num_clients} per client)",
            "train_seconds": summary.get("train_seconds"),
        }

    def _writer_model(self, ctx: StageContext, cfg: PipelineConfig, writer: str) -> Any:
        """The base model as a generator, or with a writer adapter loaded (bf16 weights where
        native), from the one factory."""
        from fedloom.generation import build_generator

        adapter = None
        if writer != "base":
            adapter = str(ctx.folder_of(f"writer-{writer}") / "run" / "adapter")
        m = cfg.train.model
        gcfg = GeneratorConfig(
            model=m.name, device=m.device, adapter=adapter, name=f"{writer}-writer"
        )
        return build_generator(gcfg)

    def _write(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        from fedloom.generation import run_job

        p: KSGConfig = cfg.params
        data = ctx.folder_of("data")
        mode = p.examples_of(m)
        pool = {
            "public": read_jsonl(data / "public.jsonl"),
            "private": read_jsonl(data / "private.jsonl"),
            "none": [],
        }[mode]
        ask = "pair" if m.answers == "writer" else "instruction"
        items, shown = [], {}
        for i in range(p.synthetic):
            rng = rng_for(cfg.seed, "ksg-examples", m.name, i)
            ex = rng.sample(pool, p.k) if pool else []
            pid = f"{m.name}-{i}"
            items.append((pid, writer_prompt(ex, m.show, p.example_words, ask)))
            shown[pid] = [e["id"] for e in ex]
        if not m.leaky:  # the faithful modes send no private text: assert on the prompts
            private = read_jsonl(data / "private.jsonl")
            texts = {cut_words(r["instruction"], p.example_words) for r in private}
            texts |= {cut_words(r["response"], p.example_words) for r in private}
            leaked = [pid for pid, prompt in items if any(t in prompt for t in texts)]
            require_none(leaked, f"{m.name}: private text in the writer prompts (faithful mode)")
        (ctx.folder / "shown.json").write_text(json.dumps(shown))
        gen = self._writer_model(ctx, cfg, str(m.writer))
        gcfg = replace(p.generation, seed=cfg.seed)
        if ask == "instruction":  # a question needs far fewer tokens than a pair
            gcfg = replace(gcfg, max_new_tokens=min(gcfg.max_new_tokens, p.instruction_tokens))
        rep = run_job(gen, items, gcfg, ctx.folder / "generations.jsonl")
        return {
            "prompts": len(items),
            "examples": mode,
            "leaky": m.leaky,
            "generated": rep.generated,
            "failed": rep.failed,
            "tokens": rep.tokens,
            "tokens_per_second": round(rep.tokens_per_second, 2),
            "writer": gen.name,
            "prompt_version": PROMPT_VERSION,
        }

    def _refine(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        from fedloom.embed import get_embedder, near_duplicates, tfidf_pair_similarity
        from fedloom.generation import build_generator, run_job

        p: KSGConfig = cfg.params
        data, write = ctx.folder_of("data"), ctx.folder_of(f"{m.name}.write")
        public = {x["id"]: x for x in read_jsonl(data / "public.jsonl")}
        private_rows = read_jsonl(data / "private.jsonl")
        by_id = public | {x["id"]: x for x in private_rows}
        shown = json.loads((write / "shown.json").read_text())
        fail: Counter[str] = Counter()
        cand: list[dict[str, Any]] = []
        seen: set[str] = set()
        job = read_job(write / "generations.jsonl")
        fail["generation_error"] += len(job.failed)
        for row in sorted(job.ok, key=lambda r: int(r["id"].rsplit("-", 1)[1])):
            pid = row["id"]
            text = row["generations"][0]["text"]
            if m.answers == "writer":
                parsed = parse_output(text)
                if isinstance(parsed, str):
                    fail[parsed] += 1
                    continue
                instr, resp = parsed
            else:
                got = parse_instruction(text)
                if got in ("no_markers", "empty_field"):
                    fail[got] += 1
                    continue
                instr, resp = got, ""
            if len(WORD.findall(instr.lower())) < p.min_instruction_words:
                fail["too_short"] += 1
                continue
            examples = [by_id[e]["instruction"] for e in shown[pid]]
            sim = max((tfidf_pair_similarity(instr, e) for e in examples), default=0.0)
            if sim > p.max_example_similarity:
                fail["copied_example"] += 1
                continue
            if normalise(instr) in seen:
                fail["duplicate"] += 1
                continue
            seen.add(normalise(instr))
            cand.append({"id": pid, "instruction": instr, "response": resp, "examples": shown[pid]})
        emb = get_embedder("minilm", [c["instruction"] for c in cand]) if cand else None
        if cand and emb is not None:
            keep, _ = near_duplicates(
                emb.encode([c["instruction"] for c in cand]), p.near_duplicate
            )
            fail["near_duplicate"] += len(cand) - len(keep)
            cand = [cand[i] for i in keep]
        parsed_n = len(cand)

        # the professional rates (ksg) and answers; or the writer's model answers itself
        answerer_name = f"{m.writer}-writer"
        prof = build_generator(p.professional) if m.refine or m.answers == "professional" else None
        if m.answers == "professional":
            assert prof is not None
            answerer_name = prof.name
        if m.refine and cand:
            assert prof is not None
            items = [
                (c["id"], [_system(RATE_SYSTEM), _user(RATE_PROMPT.format(q=c["instruction"]))])
                for c in cand
            ]
            rcfg = GenerationConfig(max_new_tokens=12, batch_size=p.generation.batch_size)
            run_job(prof, items, rcfg, ctx.folder / "ratings.jsonl")
            ratings = read_job(ctx.folder / "ratings.jsonl").texts()
            kept = []
            for c in cand:
                reply = ratings.get(c["id"])
                c["rating"] = parse_rating_reply(reply) if reply is not None else None
                if c["rating"] is None:
                    fail["unrated"] += 1
                elif c["rating"] < p.min_rating:
                    fail["low_rating"] += 1
                else:
                    kept.append(c)
            cand = kept
        if m.answers != "writer" and cand:
            if m.answers == "self":
                answerer = self._writer_model(ctx, cfg, str(m.writer))
                answerer_name = answerer.name
                few = _few_shot(m, shown, by_id, p.example_words)
                items = [(c["id"], [*few(c["id"]), _user(c["instruction"])]) for c in cand]
            else:
                assert prof is not None
                answerer = prof
                items = [(c["id"], [_system(ANSWER_SYSTEM), _user(c["instruction"])]) for c in cand]
            acfg = GenerationConfig(
                max_new_tokens=p.answer_tokens, batch_size=p.generation.batch_size
            )
            run_job(answerer, items, acfg, ctx.folder / "answers.jsonl")
            answers = read_job(ctx.folder / "answers.jsonl").texts()
            kept = []
            for c in cand:
                a = answers.get(c["id"])
                if a is None:
                    fail["answer_error"] += 1
                elif not a.strip():
                    fail["empty_answer"] += 1
                else:
                    kept.append(c | {"response": a.strip()})
            cand = kept
        rows = [
            {"instruction": c["instruction"], "input": "", "response": c["response"]}
            | {"id": c["id"], "method": m.name, "examples": c["examples"], "leaky": m.leaky}
            | {"rating": c.get("rating"), "prompt_version": PROMPT_VERSION}
            for c in cand
        ]
        write_jsonl(ctx.folder / "synthetic.jsonl", rows)
        summary = {
            "prompts": p.synthetic,
            "kept": len(rows),
            "kept_rate": round(len(rows) / p.synthetic, 4),
            "failures": {r: fail.get(r, 0) for r in FAILURES},
            "acceptance_rate": round(len(rows) / parsed_n, 4) if m.refine and parsed_n else None,
            "answered_by": answerer_name,
            "leaky": m.leaky,
        }
        summary |= quality(rows, private_rows, cfg.seed)
        canaries = json.loads((data / "canaries.json").read_text())
        summary["canaries_in_synthetic"] = canary_leaks(
            [f"{r['instruction']} {r['response']}" for r in rows], canaries
        )
        ctx.console.print(summary)
        return summary

    def _train(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        p: KSGConfig = cfg.params
        if m.writer is None:
            rows = read_jsonl(ctx.folder_of("data") / "private.jsonl")
        else:
            rows = read_jsonl(ctx.folder_of(f"{m.name}.refine") / "synthetic.jsonl")
        if not rows:  # a result, not a crash: the row says so and the table goes on
            why = (
                f"{m.name}: no synthetic pair survived refinement (see its refine stage's "
                "failures); raise `knowledgesg.synthetic` or lower `knowledgesg.min_rating`"
            )
            ctx.console.print(f"[yellow]{why}[/yellow]")
            return {"pairs": 0, "skipped": why, "private_pairs_seen": 0}
        path = ctx.folder / "train.jsonl"
        write_jsonl(path, [{k: r[k] for k in ("instruction", "input", "response")} for r in rows])
        # the server trains the final model on the (synthetic) set: one party, no DP
        summary = self._run(ctx, cfg, [{"name": "local", "path": str(path), "heldout": 0}], False)
        return {
            "pairs": len(rows),
            "base_eval_loss": summary.get("base_eval_loss"),
            "final_eval_loss": summary.get("final_eval_loss"),
            "train_seconds": summary.get("train_seconds"),
            "private_pairs_seen": p.private if m.writer is None else 0,
        }

    def _evaluate(self, ctx: StageContext, cfg: PipelineConfig, m: SynthMethod) -> dict[str, Any]:
        p: KSGConfig = cfg.params
        trained = ctx.summary_of(f"{m.name}.train")
        if trained.get("pairs") == 0:
            return {"skipped": trained.get("skipped", "no training pairs")}
        data = ctx.folder_of("data")
        max_len = cfg.train.data.max_seq_len
        adapter = ctx.folder_of(f"{m.name}.train") / "run" / "adapter"
        scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
        held = read_jsonl(data / "heldout.jsonl")
        recs = [InstructionRecord(r["instruction"], r["response"]) for r in held]
        out: dict[str, Any] = {
            "heldout_loss": heldout_vs_base(
                scorer, adapter, recs, max_len, ctx.folder, "heldout", cfg.seed
            )
        }
        if p.suite:
            used = {tuple(k) for k in json.loads((data / "used_keys.json").read_text())}
            mine = {k for k in used if k[0] == p.suite}
            out["suite"] = suite_vs_base(
                scorer, adapter, p.suite, p.suite_limit, cfg.seed, mine, ctx.folder
            )
        with scorer.model(adapter) as model:
            out |= self._model_checks(ctx, cfg, model, scorer.loaded, held)
        ctx.console.print({k: v for k, v in out.items() if k != "canaries"})
        return out

    def _model_checks(
        self, ctx: StageContext, cfg: PipelineConfig, model: Any, loaded: Any, held: list[Any]
    ) -> dict[str, Any]:
        """Canary exposure and extraction, the suite and the free-form answers of one model."""
        from fedloom.privacy.audit import Canary, exposure, extracted

        p: KSGConfig = cfg.params
        data = ctx.folder_of("data")
        tok, dev, max_len = loaded.tokenizer, loaded.device, cfg.train.data.max_seq_len
        out: dict[str, Any] = {}
        canaries = [Canary(**c) for c in json.loads((data / "canaries.json").read_text())]
        per: list[dict[str, Any]] = []
        for c in canaries:
            bits, rank = exposure(model, tok, c, p.exposure_candidates, max_len, dev, cfg.seed)
            per.append({"name": c.name, "exposure": round(bits, 3), "rank": rank})
            per[-1]["extracted"] = extracted(model, tok, c, dev)
        out["canaries"] = {
            "exposure_mean": round(sum(x["exposure"] for x in per) / len(per), 3) if per else None,
            "extracted": sum(x["extracted"] for x in per),
            "per_canary": per,
        }
        if p.freeform:
            out["freeform"] = self._freeform(ctx, cfg, model, loaded, held[: p.freeform])
        ctx.console.print({k: v for k, v in out.items() if k != "canaries"})
        return out

    def _freeform(
        self, ctx: StageContext, cfg: PipelineConfig, model: Any, loaded: Any, held: list[Any]
    ) -> dict[str, Any]:
        from fedloom.data.catalog import mtbench_judge_prompts
        from fedloom.eval.judges import make_rating_judge, parse_rating
        from fedloom.generation import LocalGenerator

        p: KSGConfig = cfg.params
        gen = LocalGenerator(model, loaded.tokenizer, loaded.device)
        gcfg = GenerationConfig(max_new_tokens=p.answer_tokens, batch_size=8)
        answers = [g[0].text for g in gen.generate([h["instruction"] for h in held], gcfg)]
        rows = [
            {"id": h["id"], "question": h["instruction"], "reference": h["response"], "answer": a}
            for h, a in zip(held, answers, strict=True)
        ]
        judge = make_rating_judge(p.judge) if p.judge else None
        scores = []
        if judge is not None:
            tpl = mtbench_judge_prompts()["single-math-v1"]
            for row in rows:
                prompt = tpl["prompt_template"].format(
                    question=row["question"], answer=row["answer"], ref_answer_1=row["reference"]
                )
                row["rating"] = parse_rating(judge.complete(tpl["system_prompt"], prompt))
                if row["rating"] is not None:
                    scores.append(row["rating"])
        write_jsonl(ctx.folder / "freeform.jsonl", rows)
        return {
            "answered": len(rows),
            "judge": judge.name if judge else None,
            "scored": len(scores),
            "mean_rating": round(sum(scores) / len(scores), 3) if scores else None,
        }

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        from fedloom.synth.ksg_report import write_table

        return write_table(ctx, cfg)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def _few_shot(
    m: SynthMethod, shown: dict[str, list[str]], by_id: dict[str, Any], words: int
) -> Any:
    """The -icl variants show their prompt's example pairs to the answering call as earlier
    chat turns; the others answer the bare instruction."""

    def turns(pid: str) -> list[dict[str, str]]:
        if m.show != "pair" or not shown.get(pid):
            return []
        out = []
        for e in shown[pid]:
            out += [_user(cut_words(by_id[e]["instruction"], words))]
            out += [{"role": "assistant", "content": cut_words(by_id[e]["response"], words)}]
        return out

    return turns


def quality(rows: list[dict[str, Any]], private: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Data quality of a synthetic set against the private data: distinct-1/2, the Fréchet
    distance of their MiniLM embeddings (equal sample sizes), and how close synthetic
    instructions come to private ones (TF-IDF)."""
    from fedloom.embed import frechet_distance, get_embedder, tfidf_max_similarity

    texts = [f"{r['instruction']} {r['response']}" for r in rows]
    out: dict[str, Any] = {
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
    }
    real = [r for r in private if not r.get("canary")]
    if len(rows) >= 2:
        n = min(len(rows), len(real))
        sample = random.Random(f"ksg-fd:{seed}").sample(real, n)
        priv_texts = [f"{r['instruction']} {r['response']}" for r in sample]
        emb = get_embedder("minilm", texts + priv_texts)
        out["frechet_distance"] = round(
            frechet_distance(emb.encode(texts[:n]), emb.encode(priv_texts)), 4
        )
        out["frechet_n"] = n
        sims = tfidf_max_similarity(
            [r["instruction"] for r in rows], [r["instruction"] for r in real]
        )
        out["max_private_similarity_mean"] = round(float(sims.mean()), 4)
        out["above_0.52_to_private"] = int((sims > 0.52).sum())
    return out
