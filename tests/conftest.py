"""Shared fixtures: a small local dataset written by the tests and a tiny-llama run config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return config_from_dict(raw)
