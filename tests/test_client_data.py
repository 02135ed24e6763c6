"""Client-owned data: records partitioned before tokenisation (raw text included), sources
assigned to clients, held-out-only sources, `FederatedData.add`, one client's shard built alone,
and `lora.init_from`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedloom.config import ConfigError, DataConfig, PartitionConfig, load_config
from fedloom.data import PartitionError
from fedloom.data.federated import assign_clients, build_federated_data, split_records
from fedloom.data.schema import InstructionRecord, TextRecord
from fedloom.models.loader import load_tokenizer


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return load_tokenizer("tiny-llama")


def _file(path: Path, n: int, tag: str, text: bool = False) -> str:
    rows = [
        {"text": f"{tag} document {i}."} if text else
        {"instruction": f"{tag} question {i}?", "response": f"{tag} answer {i}."}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_raw_text_is_partitioned_before_any_conversion(tmp_path: Path) -> None:
    src = {"name": "local", "path": _file(tmp_path / "t.jsonl", 20, "raw", text=True)}
    data = DataConfig(sources=[src | {"schema": "text"}], heldout=2)
    split = split_records(data, seed=0, convert=None)  # no task: raw text stays text
    assert len(split.train) == 18 and all(isinstance(r, TextRecord) for r in split.train)
    clients = assign_clients(split, data, PartitionConfig(strategy="iid", num_clients=3), seed=0)
    assert sorted(i for c in clients for i in c) == list(range(18))
    assert [len(c) for c in clients] == [6, 6, 6]


def test_sources_assigned_to_clients(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    a = _file(tmp_path / "a.jsonl", 11, "alpha")
    b = _file(tmp_path / "b.jsonl", 9, "beta")
    shared = _file(tmp_path / "s.jsonl", 13, "shared")
    gold = _file(tmp_path / "g.jsonl", 5, "gold")
    data = DataConfig(
        sources=[
            {"name": "local", "path": a, "clients": [0], "heldout": 0},
            {"name": "local", "path": b, "clients": [1, 2]},  # data.heldout = 1 of these
            {"name": "local", "path": shared},
            {"name": "local", "path": gold, "heldout_only": True, "domain": "gold"},
        ],
        heldout=1,
    )
    fed = build_federated_data(data, PartitionConfig(strategy="iid", num_clients=3), tok, 0)
    text = [[fed.train_records[i].instruction.split()[0] for i in c] for c in fed.clients]
    assert text[0].count("alpha") == 11 and "beta" not in text[0]
    assert text[1].count("beta") + text[2].count("beta") == 8  # 9 minus the held-out one
    assert abs(text[1].count("beta") - text[2].count("beta")) <= 1  # dealt between 1 and 2
    assert sum(t.count("shared") for t in text) == 12 and "gold" not in sum(text, [])
    assert sum(r.metadata["domain"] == "gold" for r in fed.heldout_records) == 5
    assert len(fed.heldout_records) == 0 + 1 + 1 + 5

    # one client's shard alone: the others are empty, its own is identical
    alone = build_federated_data(
        data, PartitionConfig(strategy="iid", num_clients=3), tok, 0, only_client=1
    )
    assert [len(c) for c in alone.clients] == [0, len(fed.clients[1]), 0]
    assert len(alone.train) == len(fed.clients[1])
    assert [alone.train_records[i].instruction for i in alone.clients[1]] == [
        fed.train_records[i].instruction for i in fed.clients[1]
    ]
    with pytest.raises(PartitionError, match="client 5 does not exist"):
        build_federated_data(
            data, PartitionConfig(strategy="iid", num_clients=3), tok, 0, only_client=5
        )

    # add: tokenised, appended to one client, counted
    rep = fed.add(
        2, [InstructionRecord("new?", "yes."), InstructionRecord("w " * 300, "x")], tok, 64
    )
    assert (rep.kept, rep.dropped) == (1, 1) and fed.report["train"].dropped >= 1
    assert fed.train_records[fed.clients[2][-1]].instruction == "new?"


def test_client_assignment_errors(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    a = _file(tmp_path / "a.jsonl", 11, "alpha")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{sources: [{{name: local, path: {a}, clients: [4]}}]}}\n"
        "partition: {num_clients: 2}\nfederation: {sample_clients: 2}\n"
    )
    with pytest.raises(ConfigError, match=r"assigned to clients \[4\].*num_clients` is 2"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="nothing is left to train on"):
        DataConfig(sources=[{"name": "local", "path": a, "heldout_only": True}])


def test_lora_init_from_starts_from_a_saved_adapter(tmp_path: Path) -> None:
    import torch

    from fedloom.config import LoraSettings, ModelConfig
    from fedloom.models import attach_lora, get_adapter_state, load_model, set_adapter_state
    from fedloom.models.lora import load_adapter_folder

    settings = LoraSettings(r=4, alpha=8, dropout=0.0)
    first = attach_lora(load_model(ModelConfig(precision="fp32")).model, settings, seed=0)
    state = {k: torch.full_like(v, 0.01) for k, v in get_adapter_state(first).items()}
    set_adapter_state(first, state)
    first.save_pretrained(str(tmp_path / "adapter"))
    second = attach_lora(load_model(ModelConfig(precision="fp32")).model, settings, seed=1)
    load_adapter_folder(second, tmp_path / "adapter")
    assert all(torch.equal(v, state[k]) for k, v in get_adapter_state(second).items())
    other = attach_lora(load_model(ModelConfig(precision="fp32")).model, LoraSettings(r=2), seed=0)
    with pytest.raises(ConfigError, match="does not fit"):
        load_adapter_folder(other, tmp_path / "adapter")
    with pytest.raises(ConfigError, match="holds no adapter_model"):
        LoraSettings(init_from=str(tmp_path))
