"""Federated DPO and multi-turn SFT: the DPO loss on known values, DPO runs with FedAvg,
FedProx and SCAFFOLD, preference metrics, the multi-turn label mask token by token."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedloom.cli import main
from fedloom.data.schema import ConversationRecord, PreferenceRecord
from fedloom.data.template import IGNORE_INDEX, collate_pairs, tokenize_conversation, tokenize_pair
from fedloom.engine import Federation, run
from fedloom.models import get_adapter_state
from fedloom.models.loader import load_tokenizer
from fedloom.train.objectives import dpo_loss, sequence_logps
from tests.conftest import dpo_config, multiturn_config


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return load_tokenizer("tiny-llama")


def test_dpo_loss_hand_computed() -> None:
    # pair 1: policy log-ratios chosen +1.0, rejected -1.0 -> margin beta*2 = 0.2
    # pair 2: chosen -0.5, rejected +0.5 -> margin -0.1
    pc, pr = torch.tensor([-10.0, -20.5]), torch.tensor([-13.0, -15.5])
    rc, rr = torch.tensor([-11.0, -20.0]), torch.tensor([-12.0, -16.0])
    losses, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta=0.1)
    expected = [-math.log(1 / (1 + math.exp(-0.2))), -math.log(1 / (1 + math.exp(0.1)))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert chosen_r.tolist() == pytest.approx([0.1, -0.05])
    assert rejected_r.tolist() == pytest.approx([-0.1, 0.05])
    # equal log-ratios: log 2
    zero = torch.zeros(1)
    assert dpo_loss(zero, zero, zero, zero, 0.1)[0].item() == pytest.approx(math.log(2))


def test_sequence_logps_sums_label_tokens(tok) -> None:  # type: ignore[no-untyped-def]
    pair = tokenize_pair(tok, PreferenceRecord("Add 1 and 2.", "3", "4 or so"), 64)
    assert pair is not None
    batch = collate_pairs([pair], int(tok.pad_token_id))
    assert batch["input_ids"].shape[0] == 2
    vocab = 50

    class Uniform(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):  # type: ignore[no-untyped-def]
            return type("O", (), {"logits": torch.zeros(*input_ids.shape, vocab)})()

    batch["labels"] = batch["labels"].clamp(max=vocab - 1)
    logps, n = sequence_logps(Uniform(), batch, None)
    assert n.tolist() == [len(pair.chosen_ids), len(pair.rejected_ids)]
    assert logps.tolist() == pytest.approx([-math.log(vocab) * k for k in n.tolist()], rel=1e-5)


@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox", "scaffold"])
def test_dpo_runs_change_adapter_keep_base_and_write_preference(
    pair_data: Path, tmp_path: Path, algorithm: str
) -> None:
    cfg = dpo_config(pair_data, **{"federation.algorithm": algorithm})
    fed = Federation.build(cfg)
    base = {k: v.clone() for k, v in fed.model.state_dict().items() if "lora_" not in k}
    before = {k: v.clone() for k, v in get_adapter_state(fed.model).items()}
    summary = run(cfg, tmp_path, federation=fed)
    after = get_adapter_state(fed.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in fed.model.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, base[k]), k
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy", "reward_accuracy", "margin", "chosen_logp"} <= set(
        rows[0]["eval_preference"]
    )
    assert summary["task"] == "dpo" and summary["base_preference"]["reward_accuracy"] == 0.5
    assert summary["base_preference"]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_dpo_training_raises_preference_accuracy(pair_data: Path, tmp_path: Path) -> None:
    """DPO moves the preference metrics; and `fedloom eval --suite preference --config` on the
    run's final adapter (nothing else given) reproduces the run's own `final_preference`: the
    same evaluator on the run's model settings and batch size."""
    cfg = dpo_config(
        pair_data,
        **{"federation.rounds": 4, "train.local_steps": 3, "eval.batch_size": 3},
    )
    s = run(cfg, tmp_path / "run")
    assert s["final_preference"]["margin"] > 0
    assert s["final_preference"]["reward_accuracy"] > 0.5
    assert s["final_preference"]["loss"] < s["base_preference"]["loss"]
    cfg.save(tmp_path / "dpo.yaml")
    out = tmp_path / "pref.json"
    argv = ["eval", "--suite", "preference", "--config", str(tmp_path / "dpo.yaml")]
    assert main([*argv, "--adapter", str(tmp_path / "run" / "adapter"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["suites"]["preference"]["metrics"]
    assert metrics.keys() == s["final_preference"].keys()
    for k, v in s["final_preference"].items():
        assert metrics[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


def test_dpo_rejects_instruction_data(local_data: Path, tmp_path: Path) -> None:
    from fedloom.errors import FedloomError
    from tests.conftest import tiny_config

    with pytest.raises(FedloomError, match="task: dpo` trains on preference pairs"):
        run(tiny_config(local_data, task="dpo"), tmp_path)


def test_multiturn_mask_is_exactly_the_assistant_turns(tok) -> None:  # type: ignore[no-untyped-def]
    turns = ["Hi there", "Hello! How can I help?", "What is 2+2?", "It is 4.", "Thanks", "Bye."]
    msgs = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
    ]
    ex = tokenize_conversation(tok, ConversationRecord(msgs), 512)
    assert ex is not None and not ex.truncated and ex.turns_cut == 0
    # the whole dialogue, token for token, as the template renders it
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(ex.input_ids) == full
    # label runs: exactly the three assistant answers, each with its end-of-turn marker
    runs, cur = [], []
    for t, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    assert runs == [f"{t}<|im_end|>\n" for t in turns[1::2]]
    # no user text carries loss
    masked = tok.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == IGNORE_INDEX]
    )
    assert all(u in masked for u in turns[0::2])


def test_multiturn_truncation_keeps_whole_turns(tok) -> None:  # type: ignore[no-untyped-def]
    msgs = []
    for i in range(4):
        msgs += [
            {"role": "user", "content": f"question {i} " * 5},
            {"role": "assistant", "content": f"answer {i} " * 5},
        ]
    full = tokenize_conversation(tok, ConversationRecord(msgs), 1024)
    assert full is not None
    limit = len(full.input_ids) - 5  # the last exchange no longer fits
    cut = tokenize_conversation(tok, ConversationRecord(msgs), limit)
    assert cut is not None and cut.turns_cut == 1 and cut.truncated
    assert (
        tok.decode(cut.input_ids)
        .rstrip()
        .endswith("answer 2 answer 2 answer 2 answer 2 answer 2 <|im_end|>")
    )


def test_multiturn_run_with_language_split(conversation_data: Path, tmp_path: Path) -> None:
    cfg = multiturn_config(
        conversation_data, **{"eval.sample_prompts": 1, "eval.max_new_tokens": 4}
    )
    s = run(cfg, tmp_path)
    assert s["num_clients"] == 2  # natural split by the `lang` key: en, fr
    assert s["final_eval_loss"]["all"] < s["base_eval_loss"]["all"]
    assert isinstance(s["samples"][0]["prompt"], list)  # a dialogue prompt


def test_eval_preference_suite_cli(
    pair_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = dpo_config(pair_data)
    path = tmp_path / "dpo.yaml"
    cfg.save(path)
    out = tmp_path / "pref.json"
    argv = [
        "eval",
        "--model",
        "tiny-llama",
        "--precision",
        "fp32",
        "--suite",
        "preference",
        "--config",
        str(path),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    m = json.loads(out.read_text())["suites"]["preference"]["metrics"]
    assert m["reward_accuracy"] == 0.5 and 0 <= m["accuracy"] <= 1
    assert "reward_accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["tiny-dpo.yaml", "tiny-multiturn.yaml"])
def test_shipped_tiny_alignment_configs_on_real_data(name: str, tmp_path: Path) -> None:
    """dpo_en pairs and ShareGPT conversations from their PyPI packages, tiny-llama."""
    from fedloom.config import load_config
    from tests.conftest import ROOT

    s = run(load_config(ROOT / "configs" / name), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["eval_loss"]) for r in rows)
    assert s["task"] == ("dpo" if "dpo" in name else "sft")
