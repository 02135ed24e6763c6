"""FedGC's design axes against hand-computed values: budgets, label allocation, prompts with
the right material, training phases in the named order."""

from __future__ import annotations

import random

import pytest

from fedloom.synth.fedgc import (
    BUDGETS,
    STRATEGIES,
    FedGCError,
    allocate_labels,
    guided_prompt,
    largest_remainder,
    task_prompt,
)


def test_budgets_sum_to_the_total_and_follow_their_rule() -> None:
    # equal: 10 over 3 -> 3.33 each; the one extra goes to the lowest id
    assert BUDGETS["equal"](10, [5, 1, 1]) == [4, 3, 3]
    # proportional to 5:3:2 -> exact
    assert BUDGETS["proportional"](10, [5, 3, 2]) == [5, 3, 2]
    # inverse of 1, 2, 4 -> 5.71, 2.86, 1.43 -> floors 5, 2, 1, remainders to 2.86 then 5.71
    assert BUDGETS["inverse"](10, [1, 2, 4]) == [6, 3, 1]
    # a client with no data counts as one example: shares 1, 1, 0.5 -> 1.2, 1.2, 0.6 -> 1, 1, 1
    assert BUDGETS["inverse"](3, [0, 1, 2]) == [1, 1, 1]
    for rule in BUDGETS.values():
        for total in (0, 1, 7, 100):
            assert sum(rule(total, [3, 9, 1, 4])) == total
    with pytest.raises(FedGCError, match=">= 0"):
        largest_remainder(-1, [1.0])
    with pytest.raises(FedGCError, match="positive sum"):
        largest_remainder(3, [0.0, 0.0])


def test_label_allocation_uniform_and_fill() -> None:
    assert allocate_labels(10, {"a": 0, "b": 0, "c": 0}, "uniform") == {"a": 4, "b": 3, "c": 3}
    # fill: c 0 -> 1, then b and c up to a's 5 (8 used), the last one to the lowest-named
    assert allocate_labels(10, {"a": 5, "b": 1, "c": 0}, "fill") == {"a": 1, "b": 4, "c": 5}
    # not enough to reach balance: the gap closes from the bottom
    assert allocate_labels(3, {"a": 5, "b": 1, "c": 0}, "fill") == {"a": 0, "b": 1, "c": 2}
    assert allocate_labels(0, {"a": 5, "b": 1}, "fill") == {"a": 0, "b": 0}
    for budget in (1, 5, 17):
        assert sum(allocate_labels(budget, {"x": 9, "y": 2, "z": 4}, "fill").values()) == budget
    with pytest.raises(FedGCError, match="uniform or fill"):
        allocate_labels(3, {"a": 1}, "random")


def test_guidance_puts_the_right_material_in_prompts() -> None:
    rng = random.Random(0)
    p = task_prompt("single", "biology", "exam question", rng)
    assert p == "Write an exam question about biology."  # the article follows the noun
    assert task_prompt("single", "art", "quiz question", rng) == "Write a quiz question about art."
    ex = ["What do mitochondria do?", "How do enzymes work?"]
    only = guided_prompt("prompt", p, ex, "exam question")
    assert p in only and not any(e in only for e in ex)
    real = guided_prompt("real", p, ex, "exam question")
    assert p not in real and all(e in real for e in ex)
    both = guided_prompt("both", p, ex, "exam question")
    assert p in both and all(e in both for e in ex)
    with pytest.raises(ValueError, match="needs real examples"):
        guided_prompt("real", p, [], "exam question")
    multi = {task_prompt("multi", "law", "question", random.Random(s)) for s in range(20)}
    assert len(multi) > 1 and all("law" in m for m in multi)
    assert (
        task_prompt("llm", "law", "q", rng, {"law": ["Ask about contracts."]})
        == "Ask about contracts."
    )
    with pytest.raises(ValueError, match="no written prompt"):
        task_prompt("llm", "law", "q", rng, {})


def test_real_guidance_asks_for_more_of_the_same() -> None:
    """`real` guidance follows the client's examples: it used to ask for "a different topic",
    which pulls away from the very examples it shows."""
    ex = ["What do mitochondria do?", "How do enzymes work?"]
    real = guided_prompt("real", "", ex, "exam question")
    assert "different topic" not in real and "same subject and style" in real
    assert real.startswith("Example 1: What do mitochondria do?\nExample 2: How do enzymes")


def test_generated_questions_are_filtered_per_client() -> None:
    """De-duplication and the copy-of-a-real-example check use the client's own data only (no
    client sees another's text); evaluation items are refused for every client."""
    from fedloom.synth.common import normalise
    from fedloom.synth.fedgc.config import FedGCConfig
    from fedloom.synth.fedgc.generate import keep_generated

    texts = {
        "c0-a-0": "What is the role of DNA in cells?",
        "c0-a-1": "What is the role of DNA in cells?",  # client 0's duplicate
        "c1-a-0": "What is the role of DNA in cells?",  # client 1 may ask it too
        "c1-a-1": "How do plants make their own food?",  # client 0's real question: fine here
        "c0-a-2": "How do plants make their own food?",  # but a copy of client 0's own
        "c1-a-2": "Which organ pumps blood around the body?",  # an evaluation item
        "c1-a-3": "ok",  # too short
    }
    rows = [{"id": k, "generations": [{"text": t}]} for k, t in texts.items()]
    meta = {k: {"client": int(k[1])} for k in texts}
    held = {normalise("Which organ pumps blood around the body?")}
    real = [{normalise("How do plants make their own food?")}, set()]
    kept, rejects = keep_generated(rows, meta, held, real, FedGCConfig())
    assert [[r["id"] for _, r in c] for c in kept] == [["c0-a-0"], ["c1-a-0", "c1-a-1"]]
    assert rejects == {
        "duplicate": 1,
        "copy_of_a_real_example": 1,
        "an_evaluation_item": 1,
        "unparseable_or_length": 1,
    }


def test_two_phase_strategies_get_the_same_total_rounds() -> None:
    from fedloom.synth.fedgc.budget import FedGCError
    from fedloom.synth.fedgc.train import phase_rounds

    assert phase_rounds(5, 1) == [5]
    assert phase_rounds(5, 2) == [3, 2]  # was 2 + 2: one round fewer than `mixed`
    assert phase_rounds(4, 2) == [2, 2]
    with pytest.raises(FedGCError, match="2 training phases need at least 2 rounds"):
        phase_rounds(1, 2)


def test_strategies_order_training_data_as_named() -> None:
    priv, gen = ["p1", "p2"], ["g1"]
    assert STRATEGIES["mixed"](priv, gen) == [("mixed", ["p1", "p2", "g1"])]
    assert STRATEGIES["generated-first"](priv, gen) == [
        ("generated", ["g1"]),
        ("private", ["p1", "p2"]),
    ]
    assert STRATEGIES["private-first"](priv, gen) == [
        ("private", ["p1", "p2"]),
        ("generated", ["g1"]),
    ]
    assert STRATEGIES["generated-first"](priv, []) == [("private", ["p1", "p2"])]


def test_classify_predicts_the_most_likely_whole_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedloom.data.schema import InstructionRecord
    from fedloom.eval import scoring
    from fedloom.eval.scoring import Scored
    from fedloom.models.loader import load_tokenizer
    from fedloom.tasks.classify import answer_text, predict_label

    tok = load_tokenizer("tiny-llama")
    labels = ["STEM", "humanities", "social sciences", "other"]
    rec = InstructionRecord(
        "Which area? Question: what is 2+2?", "STEM", metadata={"label": "STEM", "labels": labels}
    )
    seen: list[list[str]] = []

    def fake(model, tokenizer, context, conts, device, autocast_dtype=None, batch_size=8):  # type: ignore[no-untyped-def]
        seen.append(list(conts))
        return [Scored(lp, 1, 1) for lp in (-3.0, -1.0, -1.0, -5.0)]

    monkeypatch.setattr(scoring, "score_continuations", fake)
    # -1.0 ties between humanities and social sciences: the first listed wins
    assert predict_label(None, tok, rec, None, None) == "humanities"
    # each candidate is the label as the template renders the answer (end-of-turn included)
    from fedloom.data.template import prompt_text

    prompt = prompt_text(tok, rec)
    assert seen[0] == [answer_text(tok, rec, lab, prompt) for lab in labels]
    assert seen[0][2].startswith("social sciences") and len(seen[0][2]) > len("social sciences")


def test_classify_task_trains_and_scores_accuracy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedloom.config import config_from_dict
    from fedloom.engine.inprocess import run

    cfg = config_from_dict(
        {
            "task": "classify",
            "model": {"name": "tiny-llama", "precision": "fp32"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "data": {
                "sources": [{"name": "mmlu_topics", "limit": 60}],
                "heldout": 12,
                "max_seq_len": 160,
            },
            "partition": {"strategy": "dirichlet", "key": "label", "alpha": 0.5, "num_clients": 2},
            "federation": {"rounds": 1, "sample_clients": 2},
            "train": {"local_steps": 1, "batch_size": 2},
            "eval": {"every": 1, "max_examples": 3, "batch_size": 4},
        }
    )
    s = run(cfg, tmp_path / "run")
    final = s["final_classify"]
    assert "all" in s["final_eval_loss"]
    # the overall accuracy is the per-label ones weighted by their counts (the by-hand values
    # are test_classify_accuracy_by_hand's): it lies between them
    per = {k: v for k, v in final.items() if k.startswith("accuracy[")}
    assert len(per) >= 2 and set(per) == {k for k in s["base_classify"] if k.startswith("acc")} - {
        "accuracy"
    }
    assert min(per.values()) <= final["accuracy"] <= max(per.values())


def test_classify_accuracy_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """ClassifyEvaluator's accuracy, overall and per true label, from known predictions."""
    from types import SimpleNamespace

    from fedloom.data.schema import InstructionRecord
    from fedloom.eval import heldout
    from fedloom.tasks import classify

    labels = ["a", "b", "c"]
    truth = ["a", "a", "b", "b", "b", "c"]
    preds = iter(["a", "b", "b", "b", "c", "a"])  # a: 1/2, b: 2/3, c: 0/1 -> 3/6 overall
    recs = [
        InstructionRecord(f"q{i}", t, metadata={"label": t, "labels": labels})
        for i, t in enumerate(truth)
    ]

    class Loss:
        def __init__(self, *args: object) -> None: ...

        def __call__(self, base: bool = False) -> dict[str, float]:
            return {"all": 1.5}

    monkeypatch.setattr(heldout, "HeldoutEvaluator", Loss)
    monkeypatch.setattr(classify, "predict_label", lambda *a: next(preds))
    data = SimpleNamespace(
        heldout_records=recs, heldout_by_domain=lambda: {"x": [0, 1, 2], "y": [3, 4, 5]}
    )
    setup = SimpleNamespace(
        model=None, data=data, pad_id=0, device=None, autocast_dtype=None, max_examples=10,
        batch_size=2, tokenizer=object(),
    )  # fmt: skip
    out = classify.ClassifyEvaluator(setup)()  # type: ignore[arg-type]
    assert out == {
        "all": 1.5,
        "accuracy": 0.5,
        "accuracy[a]": 0.5,
        "accuracy[b]": pytest.approx(2 / 3),
        "accuracy[c]": 0.0,
    }


def test_mia_scores_hand_computed() -> None:
    from fedloom.synth.fedgc.mia import mia_auc, mia_best_accuracy

    # members 1, 2; non-members 2, 3: pairs (1<2, 1<3, 2=2 -> ½, 2<3) -> 3.5 / 4
    assert mia_auc([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.875)
    assert mia_auc([5.0], [1.0]) == 0.0 and mia_auc([1.0], [1.0]) == 0.5
    # threshold 1: tpr ½, tnr 1 -> 0.75; threshold 2: tpr 1, tnr ½ -> 0.75
    assert mia_best_accuracy([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.75)
    with pytest.raises(FedGCError, match="member"):
        mia_auc([], [1.0])


def test_generated_example_parser() -> None:
    from fedloom.synth.fedgc.rows import parse_generated

    assert parse_generated("Sure! Here's one:\n1. What is the derivative of x^2?", 3, 40) == (
        "What is the derivative of x^2?"
    )
    assert parse_generated("Question: Who wrote the Federalist Papers?", 3, 40) == (
        "Who wrote the Federalist Papers?"
    )
    assert parse_generated("ok", 3, 40) is None


def test_fedgc_pipeline_on_tiny_llama(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    from fedloom.cli import main
    from fedloom.synth.common import read_jsonl

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "g"
    gen = out / "gen-a0.5-equal-fill-multi-both-12.s0"
    assert main(["pipeline", str(root / "configs/tiny-fedgc.yaml"), "--set", f"out={out}"]) == 0
    prompts = json.loads((gen / "prompts.json").read_text())
    budgets = json.loads((gen / "done.json").read_text())["summary"]["budgets"]
    assert budgets == [4, 4, 4] and len(prompts) == 12  # equal budget, 12 in all
    # `both` guidance shows the client's own examples of the label where it has some
    for pr in prompts.values():
        if pr["guidance"] == "both":
            assert "Example 1:" in pr["prompt"] and pr["examples"] >= 1
        else:
            assert "Example" not in pr["prompt"]
    # provenance on every kept generated record; none is a held-out item
    for c in range(3):
        for r in read_jsonl(gen / f"generated_{c}.jsonl"):
            assert (
                r["origin"] == "generated" and r["prompt_id"].startswith(f"c{c}-") and r["variant"]
            )
    held = {r["instruction"] for r in read_jsonl(out / "data-a0.5.s0/heldout.jsonl")}
    train_files = list(out.glob("*/phase*_client*.jsonl"))
    assert train_files and not any(
        r["instruction"] in held for f in train_files for r in read_jsonl(f)
    )
    # generated-first trains in two phases, generated data first
    gf = next(out.glob("*fedavg-strategy=generated-first*"))
    assert {r["origin"] for r in read_jsonl(next(gf.glob("phase0_client*.jsonl")))} == {"generated"}
    assert {r["origin"] for r in read_jsonl(next(gf.glob("phase1_client*.jsonl")))} == {"private"}
    # ... over the same total rounds as `mixed`, one learning-rate schedule, the second phase
    # continuing the first's server and client state
    summary = json.loads((gf / "done.json").read_text())["summary"]
    mixed_run = next(out.glob("fedavg-fedgc-a0.5.train.s0")) / "run0" / "metrics.jsonl"
    total = len(mixed_run.read_text().splitlines())
    assert total == 2 and summary["phases"] == 2 and summary["phase_rounds"] == [1, 1]
    lrs = [json.loads(x)["lr"] for k in (0, 1) for x in (gf / f"run{k}/metrics.jsonl").open()]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == len(lrs)
    assert (gf / "run1/config.yaml").read_text().count(str(gf / "run0")) == 1
    go = next(out.glob("*fedavg-generated-only*"))
    assert all(
        r["origin"] == "generated" for f in go.glob("phase*_client*.jsonl") for r in read_jsonl(f)
    )
    table = (out / "table/table.md").read_text()
    assert (
        "| fedavg | 0.5 |" in table and "| scaffold | 0.5 |" in table and "generated-only" in table
    )
    # the pooled rows: FedGC against no FedGC per algorithm, ablations against the default
    res = json.loads((out / "table/results.json").read_text())
    pairs = {(r["arm"], r["reference"], r["metric"]) for r in res["rows"]}
    acc = "held-out accuracy"
    assert ("fedavg-fedgc-a0.5", "fedavg-no-fedgc-a0.5", acc) in pairs
    assert ("scaffold-fedgc-a0.5", "scaffold-no-fedgc-a0.5", acc) in pairs
    assert ("fedavg-generated-only-a0.5", "fedavg-fedgc-a0.5", acc) in pairs
    assert ("fedavg-no-fedgc-a0.5", "base", "held-out loss") in pairs
    items = json.loads((out / "fedavg-fedgc-a0.5.train.s0/items/accuracy.tuned.json").read_text())
    assert set(items["values"].values()) <= {0.0, 1.0} and items["metric"] == "accuracy"
    # a second seed for the FedAvg pair only: seed 0's stages are kept; the pair pools both
    two = [
        "--set",
        "seeds=[0,1]",
        "--set",
        "fedgc.algorithms=[fedavg]",
        "--set",
        "fedgc.ablations=[]",
    ]
    assert (
        main(["pipeline", str(root / "configs/tiny-fedgc.yaml"), "--set", f"out={out}", *two]) == 0
    )
    res = json.loads((out / "table/results.json").read_text())
    row = next(
        r for r in res["rows"]
        if (r["arm"], r["reference"], r["metric"]) == ("fedavg-fedgc-a0.5", "fedavg-no-fedgc-a0.5", acc)
    )  # fmt: skip
    assert row["seeds"] == [0, 1] and not (out / "scaffold-fedgc-a0.5.train.s1").exists()
