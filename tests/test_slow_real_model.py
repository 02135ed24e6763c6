"""Real SmolLM2 round (slow: ~1 minute on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedloom.engine import Federation, run
from fedloom.models import get_adapter_state
from tests.conftest import tiny_config


@pytest.mark.slow
def test_smollm2_one_federated_round(local_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        local_data,
        **{
            "model.name": "smollm2-135m-instruct",
            "model.precision": "auto",
            "federation.rounds": 1,
            "train.local_steps": 2,
            "train.lr": 1e-3,
            "eval.every": 0,
        },
    )
    fed = Federation.build(cfg)
    init = get_adapter_state(fed.model)
    summary = run(cfg, tmp_path, federation=fed)
    assert summary["final_eval_loss"]["all"] < summary["base_eval_loss"]["all"]
    assert all(not torch.equal(v, init[k]) for k, v in fed.strategy.global_adapter.items())
