"""KnowledgeSG: the TF-IDF example filter, parsing, canary counting and the Fréchet distance on
hand-computed cases; the method table's definitions; the whole pipeline on tiny-llama (whose
outputs do not parse: counted, then hand-written outputs, ratings and answers resume it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedloom.cli import main
from fedloom.config import ConfigError
from fedloom.embed import frechet_distance, tfidf_pair_similarity
from fedloom.pipeline import load_pipeline_config
from fedloom.privacy.accounting import epsilon, noise_for_epsilon
from fedloom.synth.common import read_jsonl
from fedloom.synth.knowledgesg import (
    canary_leaks,
    parse_instruction,
    parse_rating_reply,
    writer_prompt,
)
from fedloom.synth.knowledgesg.methods import KSG_METHODS

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny-knowledgesg.yaml"


def test_tfidf_pair_filter_above_and_below_052() -> None:
    # fitted on the two texts: shared words have idf 1, the others ln(3/2) + 1 = 1.4055;
    # "the cat sat" vs "the cat ran": 2 / (1 + 1 + 1.4055^2) = 0.5031 -> kept (<= 0.52)
    w = np.log(1.5) + 1
    assert tfidf_pair_similarity("the cat sat", "the cat ran") == pytest.approx(2 / (2 + w * w))
    assert tfidf_pair_similarity("the cat sat", "the cat ran") <= 0.52
    # three of four words shared: 3 / (3 + 1.4055^2) = 0.603 -> dropped (> 0.52)
    s = tfidf_pair_similarity("what causes acute appendicitis", "what causes acute gout")
    assert s == pytest.approx(3 / (3 + w * w)) and s > 0.52
    assert tfidf_pair_similarity("", "anything") == 0.0


def test_frechet_distance_hand_computed() -> None:
    # 1-D: means 1 and 3, variances 2 and 8 -> (1-3)^2 + 2 + 8 - 2*sqrt(16) = 6
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6)
    a = np.random.default_rng(0).normal(size=(50, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(a[:1], a)


def test_parsing_of_instructions_and_ratings() -> None:
    assert (
        parse_instruction("Instruction: What causes gout?\nResponse: urate") == "What causes gout?"
    )
    assert (
        parse_instruction("**Instruction:** Why do we sneeze?\n\nMore text") == "Why do we sneeze?"
    )
    # no marker: the first line, when it reads as a question or request
    assert parse_instruction("Question: What causes gout?\nmore") == "What causes gout?"
    assert parse_instruction("### Example 4\nYour answer:") == "no_markers"
    assert parse_instruction("Your turn") == "no_markers"
    assert parse_instruction("Instruction:   \n") == "empty_field"
    assert parse_rating_reply("[[8]]") == 8 and parse_rating_reply("Rating: 7") == 7
    assert parse_rating_reply("somewhere between 3 and 9") is None
    assert parse_rating_reply("[[11]]") is None and parse_rating_reply("none") is None


def test_canary_counting() -> None:
    canaries = [
        {"name": "Ada Quint", "secret": "123456"},
        {"name": "Hiro Varga", "secret": "999000"},
    ]
    texts = ["Ada Quint's number is 123456.", "call 999001 now", "nothing here"]
    got = canary_leaks(texts, canaries)
    assert (got["exact"], got["fuzzy"]) == (1, 2)  # one digit off counts as fuzzy only
    assert canary_leaks(["hiro varga asked"], canaries)["fuzzy"] == 1
    assert canary_leaks(["1234567 and 99"], canaries)["fuzzy"] == 1  # the run contains the secret


def test_method_table_and_config_errors() -> None:
    # which methods send private text depends on `knowledgesg.examples` for ksg / dp-ksg
    assert [m for m, x in KSG_METHODS.items() if x.leaky("public")] == ["icl"]
    assert [m for m, x in KSG_METHODS.items() if x.leaky("private")] == [
        "icl",
        "ksg",
        "base-ksg",
        "dp-ksg",
    ]
    doc = (ROOT / "docs/knowledgesg.md").read_text()
    assert all(f"`{m}`" in doc for m in KSG_METHODS)  # each defined in the docs
    with pytest.raises(ConfigError, match="unknown"):
        load_pipeline_config(TINY, ["knowledgesg.methods=[dp-ksg,nope]"])
    with pytest.raises(ConfigError, match="examples"):
        load_pipeline_config(TINY, ["knowledgesg.examples=some"])
    with pytest.raises(ConfigError, match="freeform"):
        load_pipeline_config(TINY, ["knowledgesg.freeform=9"])
    # the writer adapter is trained on, and then prompted with, the example-free prompt
    assert "Example" not in writer_prompt([], "pair")


def _summary(folder: Path) -> dict:
    return json.loads((folder / "done.json").read_text())["summary"]


def test_knowledgesg_end_to_end_on_tiny_llama(tmp_path, capsys) -> None:
    out = tmp_path / "ksg"
    args = ["pipeline", str(TINY), "--set", f"out={out}"]
    leaky = [*args, "--set", "knowledgesg.methods=[non-private,dp-ksg,icl]"]
    # 1. tiny-llama's writings do not parse: every one counted; the method's row says it has
    # no model (a result, not a crash) and the table goes on
    assert main(leaky) == 0
    assert "dp-ksg: no synthetic pair survived" in capsys.readouterr().out
    ref = _summary(out / "dp-ksg.refine.s0")
    assert ref["kept"] == 0 and sum(ref["failures"].values()) == 6
    assert _summary(out / "dp-ksg.train.s0")["pairs"] == 0
    assert "no synthetic pair" in _summary(out / "dp-ksg.evaluate.s0")["skipped"]
    leaky_table = out / "table"
    assert "| dp-ksg | 0 | — (no model) |" in (leaky_table / "table.md").read_text()
    # the pooled table: a method with no model has no comparison row
    arms = {(r["arm"], r["reference"]) for r in _summary(leaky_table)["rows"]}
    assert ("non-private", "base") in arms and not any(a == "dp-ksg" for a, _ in arms)

    # epsilon is composed over every step of the run (2 rounds x 2 steps), not per round
    data = out / "data.s0"
    n = len(read_jsonl(data / "private.jsonl"))
    assert n == 20 + 2 * 2  # private pairs + canaries x repeats
    q, delta = 2 / n, 1 / n
    sigma = noise_for_epsilon(8.0, delta, q, 4, "rdp")
    eps = _summary(out / "writer-dp.s0")["epsilon_by_client"]["0"]
    assert eps == pytest.approx(epsilon([(sigma, q, 4)], delta, "rdp"), rel=1e-9)
    assert eps == pytest.approx(8.0, abs=0.02)
    assert eps > epsilon([(sigma, q, 2)], delta, "rdp") + 1  # what per-round accounting says

    # the faithful mode's prompts hold no private text; held-out items are nowhere
    private = read_jsonl(data / "private.jsonl")
    held = read_jsonl(data / "heldout.jsonl")
    prompts = [r["prompt"] for r in read_jsonl(out / "dp-ksg.write.s0/generations.jsonl")]
    snippets = [r["instruction"][:40] for r in private] + [r["response"][:40] for r in private]
    assert prompts and not any(s in p for s in snippets for p in prompts)
    assert not any(h["instruction"][:40] in p for h in held for p in prompts)

    # 2. hand-written writings, ratings and answers; the refine stage counts each drop
    gen_file = out / "dp-ksg.write.s0/generations.jsonl"
    rows = read_jsonl(gen_file)
    shown = json.loads((out / "dp-ksg.write.s0/shown.json").read_text())
    public = {r["id"]: r for r in read_jsonl(data / "public.jsonl")}
    texts = {
        "dp-ksg-0": "Instruction: What are the first-line drugs for hypertension in adults?",
        "dp-ksg-1": "Instruction: Which nerve is injured in wrist drop after a fracture?",
        "dp-ksg-2": "### Example 3",
        "dp-ksg-3": "Instruction: Hi there",
        "dp-ksg-4": "Instruction: What are the first-line drugs for hypertension in adults?",
        "dp-ksg-5": "Instruction: " + public[shown["dp-ksg-5"][0]]["instruction"],
    }
    for r in rows:
        r["generations"][0]["text"] = texts[r["id"]]
    gen_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refine = out / "dp-ksg.refine.s0"
    for f in refine.iterdir():
        f.unlink()

    def job(name: str, replies: dict[str, str]) -> None:
        (refine / name).write_text(
            "".join(
                json.dumps({"id": i, "prompt": "", "generations": [{"text": t, "tokens": 1}]})
                + "\n"
                for i, t in replies.items()
            )
        )

    job("ratings.jsonl", {"dp-ksg-0": "[[8]]", "dp-ksg-1": "Rating: [[3]]"})
    job("answers.jsonl", {"dp-ksg-0": "Thiazides, ACE inhibitors, ARBs or calcium blockers."})
    import shutil

    for later in (out / "dp-ksg.train.s0", out / "dp-ksg.evaluate.s0", leaky_table):
        shutil.rmtree(later)  # redo what depends on the refined set
    assert main(leaky) == 0
    assert _summary(out / "icl.train.s0")["pairs"] == 0  # the leaky baseline: still nothing
    ref = _summary(refine)
    assert ref["kept"] == 1 and ref["acceptance_rate"] == 0.5
    f = ref["failures"]
    assert (f["no_markers"], f["too_short"], f["duplicate"], f["copied_example"]) == (1, 1, 1, 1)
    assert (f["low_rating"], f["unrated"], f["near_duplicate"]) == (1, 0, 0)
    syn = read_jsonl(refine / "synthetic.jsonl")
    assert syn[0]["response"].startswith("Thiazides") and syn[0]["rating"] == 8
    assert syn[0]["leaky"] is False and syn[0]["prompt_version"] == "ksg-v1"

    # the leaky baseline's prompts do carry private pairs, and say so
    icl = out / "icl.write.s0"
    assert _summary(icl)["leaky"] is True
    icl_prompts = [r["prompt"] for r in read_jsonl(icl / "generations.jsonl")]
    assert any(r["instruction"][:30] in p for r in private for p in icl_prompts)

    # 3. the table of the two methods
    assert main(args) == 0, capsys.readouterr().err
    summary = _summary(out / "table")
    table = summary["methods"]["0"]
    by = {r["method"]: r for r in table}
    assert by["dp-ksg"]["pairs"] == 1 and by["non-private"]["pairs"] == n
    assert (
        by["dp-ksg"]["epsilon"] == pytest.approx(eps, abs=1e-3)
        and by["non-private"]["epsilon"] is None
    )
    assert by["dp-ksg"]["canaries_in_synthetic_exact"] == 0
    lo, hi = by["dp-ksg"]["heldout_ci95"]
    assert lo <= by["dp-ksg"]["heldout_diff"] <= hi
    md = (out / "table/table.md").read_text()
    assert "## Seed 0: every measure" in md and "| dp-ksg | 1 |" in md
    rows = {(r["arm"], r["reference"]): r for r in summary["rows"]}
    # dp-ksg against base, against non-private, and against nothing else (no dp baseline here)
    assert set(rows) == {("non-private", "base"), ("dp-ksg", "base"), ("dp-ksg", "non-private")}
    assert rows[("dp-ksg", "base")]["diff"] == pytest.approx(by["dp-ksg"]["heldout_diff"], abs=1e-4)
    assert (out / "table/report.html").exists() and (out / "dp-ksg.evaluate.s0/items").is_dir()
    ev = _summary(out / "dp-ksg.evaluate.s0")
    assert ev["suite"]["tuned"]["n"] == 3 and ev["freeform"]["answered"] == 2
    assert len(ev["canaries"]["per_canary"]) == 2

    # 4. a second seed (its own data draw and model): the non-private row pools both seeds
    two = [*args, "--set", "seeds=[0,1]", "--set", "knowledgesg.methods=[non-private]"]
    assert main(two) == 0, capsys.readouterr().err
    rows = {(r["arm"], r["reference"]): r for r in _summary(out / "table")["rows"]}
    assert set(rows) == {("non-private", "base")} and rows[("non-private", "base")]["seeds"] == [
        0,
        1,
    ]
    assert _summary(out / "non-private.train.s1")["pairs"] == n
    s0 = json.loads((out / "non-private.evaluate.s0/items/heldout.base.json").read_text())
    s1 = json.loads((out / "non-private.evaluate.s1/items/heldout.base.json").read_text())
    assert set(s0["values"]) != set(s1["values"])  # each seed draws its own held-out pairs


def test_examples_private_runs_ksg_as_a_labelled_leaky_mode(tmp_path: Path) -> None:
    """`--set knowledgesg.examples=private` (advertised in the config's header) runs dp-ksg with
    private examples in its prompts, labelled leaky; it used to trip the no-private-text guard
    meant for the faithful modes."""
    out = tmp_path / "leaky"
    args = ["pipeline", str(TINY), "--set", f"out={out}", "--set", "knowledgesg.examples=private"]
    assert main([*args, "--set", "knowledgesg.methods=[base-ksg,dp-ksg]"]) == 0
    for m in ("base-ksg", "dp-ksg"):  # the control runs the same steps with the base writer
        write = out / f"{m}.write.s0"
        assert _summary(write)["leaky"] is True and _summary(write)["examples"] == "private"
    assert _summary(out / "base-ksg.write.s0")["writer"] != _summary(write)["writer"]
    private = read_jsonl(out / "data.s0" / "private.jsonl")
    prompts = [r["prompt"] for r in read_jsonl(write / "generations.jsonl")]
    assert any(r["instruction"][:30] in p for r in private for p in prompts)
