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
