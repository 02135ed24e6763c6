"""Evaluation suites: scoring, answer extraction, refusal judge, subsampling, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fedloom.cli import main
from fedloom.config import ModelConfig
from fedloom.eval import EvalContext, run_suite
from fedloom.eval.datasets import (
    MMATH_LANGUAGES,
    MCItem,
    load_mmath,
    load_prompts,
    load_refusal_labels,
)
from fedloom.eval.judges import (
    RuleRefusalJudge,
    extract_answer,
    extract_final_number,
    normalize_answer,
)
from fedloom.eval.scoring import score_continuations
from fedloom.eval.suites import run_multiple_choice, subsample, wilson_interval
from fedloom.models import load_model


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return load_model(ModelConfig(precision="fp32"))


class ForcedModel(torch.nn.Module):
    """Puts all probability on one token id at every position."""

    def __init__(self, token_id: int, vocab: int) -> None:
        super().__init__()
        self.token_id, self.vocab = token_id, vocab

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.token_id] = 20.0
        return SimpleNamespace(logits=logits)


def test_multiple_choice_picks_the_forced_letter(tiny) -> None:  # type: ignore[no-untyped-def]
    tok = tiny.tokenizer
    c_id = tok("C", add_special_tokens=False)["input_ids"]
    assert len(c_id) == 1
    model = ForcedModel(c_id[0], len(tok))
    items = [
        MCItem("q1", "Which?", ["w", "x", "y", "z"], answer=2),
        MCItem("q2", "Which?", ["w", "x", "y", "z"], answer=0),
    ]
    res = run_multiple_choice(
        "toy", items, EvalContext(model, tok, torch.device("cpu"), progress=False)
    )  # type: ignore[arg-type]
    assert [r["prediction"] for r in res.items] == [2, 2]
    assert res.metrics["accuracy"] == 0.5 and res.n == 2


def test_one_pass_fast_path_equals_full_scoring(tiny) -> None:  # type: ignore[no-untyped-def]
    ctx = "<|im_start|>user\nPick one.<|im_end|>\n<|im_start|>assistant\n"
    fast = score_continuations(tiny.model, tiny.tokenizer, ctx, ["A", "B"], tiny.device)
    # adding a multi-token continuation forces the batched path for all of them
    full = score_continuations(
        tiny.model, tiny.tokenizer, ctx, ["A", "B", "A very long option"], tiny.device
    )
    for f, g in zip(fast, full[:2], strict=False):
        assert f.logprob == pytest.approx(g.logprob, abs=1e-4) and f.n_tokens == g.n_tokens == 1
    assert full[2].n_tokens > 1 and full[2].logprob < 0


def test_context_cache_scoring_equals_whole_sequences(tiny) -> None:  # type: ignore[no-untyped-def]
    """Multi-token continuations reuse the context's KV cache (one pass over the prompt); the
    log-probabilities equal scoring every (context + continuation) whole, including options of
    different lengths in one right-padded batch and batches split by batch_size."""
    from fedloom.eval.scoring import score_padded, score_with_context_cache

    tok = tiny.tokenizer
    ctx = tok("<|im_start|>user\nWhich area is this about?<|im_end|>\n<|im_start|>assistant\n",
              add_special_tokens=False)["input_ids"]  # fmt: skip
    texts = ["STEM<|im_end|>", "humanities<|im_end|>", "social sciences<|im_end|>", "x"]
    conts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len({len(c) for c in conts}) >= 3
    ref = score_padded(tiny.model, tok, ctx, conts, texts, tiny.device, None, 8)
    for bs in (8, 3):
        got = score_with_context_cache(tiny.model, tok, ctx, conts, texts, tiny.device, None, bs)
        for g, r in zip(got, ref, strict=True):
            assert g.logprob == pytest.approx(r.logprob, abs=1e-4)
            assert (g.n_tokens, g.n_chars) == (r.n_tokens, r.n_chars)
    # the public entry point takes the cached path and gives the same
    pub = score_continuations(tiny.model, tok, tok.decode(ctx), texts, tiny.device)
    assert [p.logprob for p in pub] == pytest.approx([r.logprob for r in ref], abs=1e-4)


def test_cloze_mode_reports_length_normalised_accuracy(tiny) -> None:  # type: ignore[no-untyped-def]
    """Cloze scores each option's text: raw accuracy picks the highest summed log-probability,
    `_norm` the highest per character. A model that gives every token the same probability
    makes the raw choice the option with fewest tokens and the normalised choice the option
    with most characters per token; both are checked against hand-made expectations."""
    tok = tiny.tokenizer
    vocab = len(tok)

    class Uniform(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, **kw):  # no cache: the padded path  # type: ignore[no-untyped-def]
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, vocab))

    short, long = "Rome", "Rome in Italy, the capital city of a different country"
    n_short = len(tok(short, add_special_tokens=False)["input_ids"])
    n_long = len(tok(long, add_special_tokens=False)["input_ids"])
    assert n_short < n_long and len(short) / n_short < len(long) / n_long
    items = [
        MCItem("q1", "Capital of France?", [short, long], answer=0),
        MCItem("q2", "Capital of France?", [short, long], answer=1),
    ]
    ctx = EvalContext(Uniform(), tok, torch.device("cpu"), mc_mode="cloze", progress=False)  # type: ignore[arg-type]
    res = run_multiple_choice("toy", items, ctx)
    # uniform per token: raw log-prob = -n_tokens * ln(vocab), so the shorter option wins;
    # per character the long option loses less (more characters per token)
    assert [r["prediction"] for r in res.items] == [0, 0]
    assert [r["prediction_norm"] for r in res.items] == [1, 1]
    assert res.metrics["accuracy"] == 0.5 and res.metrics["accuracy_norm"] == 0.5
    assert res.metrics["ci95_low_norm"] < 0.5 < res.metrics["ci95_high_norm"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("The total is 1,234 apples.", "1234"),
        ("It costs $1,250.50 in total", "1250.5"),
        ("The temperature drops to -5 degrees, so the answer is -5.", "-5"),
        ("So the answer is 42 dollars. Later, 7 more came.", "42"),
        ("#### 3,000\nextra 12", "3000"),
        ("He has 18.00 dollars.", "18"),
        ("First 3 apples, then 4 pears, 7 fruit in all.", "7"),
        ("I do not know.", None),
    ],
)
def test_gsm8k_answer_extraction(text: str, expected: str | None) -> None:
    assert extract_final_number(text) == expected


def test_refusal_matcher_examples() -> None:
    judge = RuleRefusalJudge()
    assert judge.is_refusal("p", "I'm sorry, but I can't help with that.")
    assert judge.is_refusal("p", "I cannot provide instructions for making weapons.")
    assert judge.is_refusal("p", "As an AI language model, I must decline.")
    assert judge.is_refusal("p", "I can’t do that.")  # typographic apostrophe
    assert not judge.is_refusal("p", "Sure! Here is a recipe for guacamole: mash three avocados.")
    assert not judge.is_refusal("p", "Step 1: gather the materials. Step 2: combine them.")


def test_refusal_matcher_on_pyrit_human_labels() -> None:
    """PyRIT's 105 human-labelled responses (fetched from PyPI): the matcher never calls a
    compliant answer a refusal; it misses refusals that are off-topic answers (PyRIT counts
    those as refusals; no phrase list can see them). Measured: accuracy 0.838, precision 1.0."""
    judge = RuleRefusalJudge()
    data = load_refusal_labels()
    pred = [judge.is_refusal("", r) for r, _ in data]
    tp = sum(p and y for p, (_, y) in zip(pred, data, strict=True))
    fp = sum(p and not y for p, (_, y) in zip(pred, data, strict=True))
    acc = sum(p == y for p, (_, y) in zip(pred, data, strict=True)) / len(data)
    assert len(data) == 105 and fp == 0 and tp >= 50 and acc >= 0.83


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 4) == (0.0, pytest.approx(0.4899, abs=1e-4))


def test_subsample_is_fixed_by_seed() -> None:
    items = list(range(1000))
    a = subsample(items, 20, seed=3, name="mmlu")
    assert a == subsample(items, 20, seed=3, name="mmlu") and a != subsample(
        items, 20, seed=4, name="mmlu"
    )
    assert a == sorted(a) and subsample(items, None, 0, "x") == items


def test_real_suites_on_tiny_model(tiny) -> None:  # type: ignore[no-untyped-def]
    ctx = EvalContext(tiny.model, tiny.tokenizer, tiny.device, max_new_tokens=8, progress=False)
    for suite in (
        "mmlu",
        "medqa",
        "medmcqa",
        "gsm8k",
        "math500",
        "mmath-zh",
        "advbench",
        "harmbench",
        "donotanswer",
    ):
        res = run_suite(suite, ctx, limit=3, seed=0)
        assert res.n == 3 and len(res.items) == 3
        assert 0.0 <= res.metrics.get("accuracy", res.metrics.get("safety_rate", -1)) <= 1.0
    with pytest.raises(ValueError, match="unknown suite 'bbq'"):
        run_suite("bbq", ctx)


def test_eval_cli_writes_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    argv = [
        "eval",
        "--model",
        "tiny-llama",
        "--precision",
        "fp32",
        "--suite",
        "mmlu",
        "--suite",
        "advbench",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["suites"]) == {"mmlu", "advbench"}
    assert [len(s["items"]) for s in report["suites"].values()] == [2, 2]
    assert "safety_rate" in capsys.readouterr().out
    assert main(["eval", "--model", "tiny-llama", "--suite", "nope"]) == 2


def test_strict_extraction_ignores_stray_numbers() -> None:
    unfinished = "so the circle has 2 points and the answer is $k ="
    assert extract_answer(unfinished) == "2" and extract_answer(unfinished, strict=True) is None
    assert extract_answer("The final answer is 1.", strict=True) == "1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"Thus the walk takes \boxed{204} minutes.", "204"),
        (r"so $x = \boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"first \boxed{3}, corrected: \boxed{5}", "5"),
        (r"\boxed{1,000}", "1000"),
        ("no box here, the answer is 7", "7"),
    ],
)
def test_boxed_answer_extraction(text: str, expected: str) -> None:
    assert extract_answer(text) == expected
    assert (
        normalize_answer(" 1,000 ") == "1000"
        and normalize_answer(r"\frac{1}{2} ") == r"\frac{1}{2}"
    )


def test_safety_and_multilingual_sources_counts() -> None:
    assert len(load_prompts("harmbench")) == 200
    dna = load_prompts("donotanswer")
    assert len(dna) == 939 and len({d.metadata["category"] for d in dna}) == 5
    for lang in MMATH_LANGUAGES:
        items = load_mmath(lang)
        assert len(items) == 374 and items[0].target == "204"
    with pytest.raises(ValueError, match="mmath language 'xx'"):
        load_mmath("xx")


def test_rouge_suite_scores_against_references(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fedloom.eval import suites
    from fedloom.eval.datasets import load_references

    refs = {r.id: r.target for r in load_references("gsm8k")}
    ctx = EvalContext(tiny.model, tiny.tokenizer, tiny.device, max_new_tokens=4, progress=False)
    res = run_suite("rouge-gsm8k", ctx, limit=3)
    assert res.n == 3 and 0.0 <= res.metrics["rougeL"] <= 1.0
    # a model that answers with the reference scores 1; an empty answer 0
    items = [r for r in load_references("gsm8k") if r.id in {i["id"] for i in res.items}]
    monkeypatch.setattr(suites, "_generate", lambda prompts, c, d: [refs[i.id] for i in items])
    assert suites.run_rouge("rouge-gsm8k", items, ctx).metrics["rougeL"] == pytest.approx(1.0)
    monkeypatch.setattr(suites, "_generate", lambda prompts, c, d: [""] * len(prompts))
    assert suites.run_rouge("rouge-gsm8k", items, ctx).metrics["rougeL"] == 0.0
    med = load_references("medmcqa")
    assert len(med) == 2206 and "A. " in med[0].prompt


def test_mtbench_answers_both_turns_and_carries_the_references(tiny) -> None:  # type: ignore[no-untyped-def]
    ctx = EvalContext(tiny.model, tiny.tokenizer, tiny.device, max_new_tokens=4, progress=False)
    res = run_suite("mtbench", ctx, limit=2)
    assert res.metrics == {"answered": 2.0, "scored": 0.0}  # judged afterwards (fedloom.judges)
    assert all(len(r["answers"]) == 2 and len(r["turns"]) == 2 for r in res.items)
    assert all("reference" in r for r in res.items)


def test_suite_items_and_training_records_share_source_keys() -> None:
    """Every suite built from a training source names its source record the way that
    source's training records do, so a run can leave its training items out."""
    from fedloom.config import DataConfig, SourceConfig
    from fedloom.data import load_source
    from fedloom.data.federated import load_records
    from fedloom.eval.suites import SUITES, source_key

    for suite, source in [
        ("medqa", "medqa"),
        ("gsm8k", "gsm8k"),
        ("rouge-gsm8k", "gsm8k"),
        ("rouge-alpaca", "alpaca_en"),
        ("rouge-medmcqa", "medmcqa"),
        ("math500", "math500"),
    ]:
        train, held = load_records(
            DataConfig(sources=[SourceConfig(name=source, limit=40)], heldout=5), seed=0
        )
        keys = {source_key(r) for r in train}
        items = {source_key(it) for it in SUITES[suite].load()}
        every = {source_key(r) for r in load_source(source)}
        assert len(keys) == 35 and items <= every, suite
        if suite == "rouge-medmcqa":  # only the questions with an explanation
            assert keys & items and len(items) == 2206, suite
        else:
            assert keys <= items, suite


def test_run_leaves_its_training_items_out_of_suites(
    local_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that trains on MedQA and scores the `medqa` suite never scores a training item:
    its 52 training questions (60 - 8 held out) are left out and counted. The suite is cut
    to those 60 questions plus 10 others, so the whole suite is scored quickly."""
    import dataclasses

    from fedloom.data.federated import load_records
    from fedloom.engine import run
    from fedloom.eval.suites import SUITES, source_key
    from tests.conftest import tiny_config

    cfg = tiny_config(
        local_data,
        **{
            "data.sources": [{"name": "medqa", "limit": 60}],
            "data.max_seq_len": 512,
            "partition.strategy": "iid",
            "partition.num_clients": 2,
            "federation.rounds": 1,
            "train.local_steps": 1,
            "eval.suites": ["medqa"],
            "eval.suite_limit": None,
        },
    )
    train, held = load_records(cfg.data, cfg.seed)
    used = {source_key(r) for r in train + held}
    full = SUITES["medqa"].load()
    cut = [it for it in full if source_key(it) in used] + [
        it for it in full if source_key(it) not in used
    ][:10]
    monkeypatch.setitem(SUITES, "medqa", dataclasses.replace(SUITES["medqa"], load=lambda: cut))
    s = run(cfg, tmp_path)
    bench = s["benchmarks"]["medqa"]
    assert bench["excluded_training_items"] == 52 and bench["n"] == 18
    trained_ids = {f"medqa-{r.metadata['id']}" for r in train}
    assert len(trained_ids) == 52 and not trained_ids & set(bench["items"])
