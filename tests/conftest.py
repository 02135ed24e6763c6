"""Shared fixtures: a small local dataset written by the tests and a tiny-llama run config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import fedloom.pipeline.shipped  # noqa: F401  (registers the shipped pipelines)
from fedloom.config import RunConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _records() -> list[dict[str, Any]]:
    rows = []
    for i in range(40):
        rows.append(
            {
                "q": f"What is {i} plus {i + 3}?",
                "a": f"{i} + {i + 3} = {2 * i + 3}. The answer is {2 * i + 3}.",
                "topic": "math",
            }
        )
        rows.append(
            {
                "q": f"Name a colour number {i}.",
                "a": f"Colour number {i} is {['red', 'blue', 'green', 'teal'][i % 4]}.",
                "topic": "general",
            }
        )
    return rows


@pytest.fixture(scope="session")
def local_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _records()) + "\n")
    return path


def tiny_config(data_path: Path, **overrides: Any) -> RunConfig:
    """A tiny-llama config over the local toy data; ``overrides`` are dotted keys."""
    raw: dict[str, Any] = {
        "seed": 0,
        "model": {"name": "tiny-llama", "precision": "fp32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "data": {
            "sources": [
                {
                    "name": "local",
                    "path": str(data_path),
                    "columns": {"instruction": "q", "response": "a", "domain": "topic"},
                }
            ],
            "heldout": 8,
            "max_seq_len": 96,
        },
        "partition": {"strategy": "natural", "key": "domain", "num_clients": None},
        "federation": {"algorithm": "fedavg", "rounds": 2, "sample_clients": 2},
        "train": {"local_steps": 2, "batch_size": 2, "lr": 5e-3},
        "eval": {"every": 1, "max_examples": 4, "batch_size": 4},
    }
    for key, value in overrides.items():
        node = raw
        if "." not in key:
            raw[key] = value
            continue
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return config_from_dict(raw)


def _pairs() -> list[dict[str, Any]]:
    """Preference pairs with a learnable rule: the chosen answer is polite and correct."""
    rows = []
    for i in range(48):
        a, b = i % 7, i % 5
        rows.append(
            {
                "prompt": f"What is {a} plus {b}?",
                "chosen": f"Happy to help: {a} + {b} = {a + b}.",
                "rejected": f"{a + b + 1}, obviously.",
                "topic": "math" if i % 2 else "chat",
            }
        )
    return rows


def _conversations() -> list[dict[str, Any]]:
    rows = []
    for i in range(40):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Hi, I am user {i}."},
                    {"role": "assistant", "content": f"Hello user {i}, how can I help?"},
                    {"role": "user", "content": f"What is {i} times 2?"},
                    {"role": "assistant", "content": f"{i} times 2 is {2 * i}."},
                ],
                "lang": "en" if i % 3 else "fr",
            }
        )
    return rows


@pytest.fixture(scope="session")
def pair_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _pairs()) + "\n")
    return path


@pytest.fixture(scope="session")
def conversation_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conv") / "conv.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _conversations()) + "\n")
    return path


def dpo_config(pair_path: Path, **overrides: Any) -> RunConfig:
    source = {
        "name": "local",
        "path": str(pair_path),
        "schema": "preference",
        "columns": {"domain": "topic"},
    }
    return tiny_config(
        pair_path,
        **{"task": "dpo", "data.sources": [source], "train.lr": 2e-2, **overrides},
    )


def multiturn_config(conv_path: Path, **overrides: Any) -> RunConfig:
    source = {"name": "local", "path": str(conv_path), "schema": "conversation", "domain": "chat"}
    return tiny_config(
        conv_path,
        **{
            "data.sources": [source],
            "partition.strategy": "natural",
            "partition.key": "lang",
            **overrides,
        },
    )
