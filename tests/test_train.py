from __future__ import annotations

import math

import pytest

from fedloom.train import cosine_lr, draw_examples
from fedloom.utils import rng_for


def test_cosine_lr_over_rounds() -> None:
    assert cosine_lr(0, 10, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert cosine_lr(5, 10, 1e-3, 1e-5) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert cosine_lr(9, 10, 1e-3, 0.0) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 0.9)))


def test_draw_examples_is_seeded_and_repeats_small_shards() -> None:
    shard = [3, 5, 7]
    a = draw_examples(shard, 7, rng_for(0, "examples", 1, 2))
    assert a == draw_examples(shard, 7, rng_for(0, "examples", 1, 2))
    assert a != draw_examples(shard, 7, rng_for(0, "examples", 2, 2))
    assert len(a) == 7 and sorted(a[:3]) == shard and sorted(a[3:6]) == shard


@pytest.mark.parametrize("task", ["sft", "dpo"])
def test_warm_up_leaves_no_trace(local_data, pair_data, task: str) -> None:  # type: ignore[no-untyped-def]
    """A warm-up step (what `fedloom client` runs before its first round) changes nothing: the
    adapter bit-identical, torch's global RNG where it was, and the next client round equal to
    the same round in a process that never warmed up."""
    import torch

    from fedloom.engine.inprocess import Federation
    from fedloom.models import get_adapter_state
    from fedloom.train.local import example_tokens
    from tests.conftest import dpo_config, tiny_config

    over = {"lora.dropout": 0.1}  # dropout draws from the RNG the warm-up must not disturb
    cfg = tiny_config(local_data, **over) if task == "sft" else dpo_config(pair_data, **over)
    cold, warm = Federation.build(cfg), Federation.build(cfg)
    before = get_adapter_state(warm.model)
    rng = torch.get_rng_state()
    examples = [warm.data.train[i] for i in warm.data.clients[1]]
    assert all(example_tokens(e) > 0 for e in examples)
    assert warm.warm_up(1) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    after = get_adapter_state(warm.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in warm.model.parameters())
    a, b = cold.fit_client(0, 1, cfg.train.lr), warm.fit_client(0, 1, cfg.train.lr)
    assert a.metrics["loss"] == b.metrics["loss"]
    assert all(torch.equal(a.payload[k], b.payload[k]) for k in a.payload)
