"""Update compression: round-trip error bounds per codec, top-k error feedback, byte counters
equal to the encoded sizes, and runs with every codec on both engines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedloom.compression import get_codec
from fedloom.engine import Federation, run
from fedloom.utils import state_nbytes
from tests.conftest import tiny_config


def _update(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.lora_A.weight": torch.randn(4, 64, generator=g) * 1e-2,
        "a.lora_B.weight": torch.randn(64, 4, generator=g) * 1e-3,
    }


def test_fp16_round_trip() -> None:
    x = _update()
    codec = get_codec("fp16")
    payload, _ = codec.encode(x, {})
    assert all(v.dtype == torch.float16 for v in payload.values())
    y = codec.decode(payload, x)
    for k in x:
        assert torch.allclose(y[k], x[k], rtol=2**-10, atol=1e-7)
    assert state_nbytes(payload) * 2 == state_nbytes(x)


def test_int8_error_is_at_most_half_a_step_per_row() -> None:
    x = _update()
    codec = get_codec("int8")
    payload, _ = codec.encode(x, {})
    y = codec.decode(payload, x)
    for k, v in x.items():
        # groups along the shorter axis: A [4, 64] per row, B [64, 4] per column
        g = v if v.shape[0] <= v.shape[1] else v.t()
        scale = g.abs().amax(dim=1) / 127
        err = (y[k] - v) if v.shape[0] <= v.shape[1] else (y[k] - v).t()
        assert (err.abs() <= scale[:, None] / 2 + 1e-9).all()
        assert payload[f"{k}::q"].dtype == torch.int8
        assert payload[f"{k}::scale"].shape == (4,)
    assert state_nbytes(x) / state_nbytes(payload) > 3.5


def test_topk_keeps_the_largest_and_feeds_back_the_rest() -> None:
    x = _update()
    codec = get_codec("topk", topk_fraction=0.25)
    payload, state = codec.encode(x, {})
    y = codec.decode(payload, x)
    for k, v in x.items():
        k_keep = math.ceil(0.25 * v.numel())
        assert int((y[k] != 0).sum()) == k_keep
        threshold = v.abs().flatten().topk(k_keep).values.min()
        assert (y[k][v.abs() >= threshold] == v[v.abs() >= threshold]).all()
        # the residual is exactly what was not sent
        assert torch.equal(state["topk_residual"][k].reshape(v.shape), v - y[k])
    # error feedback: after two rounds, sent + residual == the sum of both updates
    x2 = _update(1)
    payload2, state2 = codec.encode(x2, state)
    y2 = codec.decode(payload2, x2)
    for k in x:
        total = y[k] + y2[k] + state2["topk_residual"][k].reshape(x[k].shape)
        assert torch.allclose(total, x[k] + x2[k], atol=1e-7)
    assert (
        get_codec("topk", 1.0)
        .decode(get_codec("topk", 1.0).encode(x, {})[0], x)["a.lora_A.weight"]
        .equal(x["a.lora_A.weight"])
    )
    with pytest.raises(ValueError, match="unknown compression 'zip'"):
        get_codec("zip")


@pytest.mark.parametrize("mode", ["none", "fp16", "int8", "topk"])
def test_runs_count_encoded_bytes(local_data: Path, tmp_path: Path, mode: str) -> None:
    cfg = tiny_config(
        local_data, **{"federation.compression": mode, "federation.topk_fraction": 0.1}
    )
    fed = Federation.build(cfg)
    adapter = {k: v.clone() for k, v in fed.strategy.global_adapter.items()}
    run(cfg, tmp_path, federation=fed)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_client = {
        "none": state_nbytes(adapter),
        "fp16": state_nbytes(adapter) // 2,
        "int8": sum(v.numel() + 4 * min(v.shape) for v in adapter.values()),
        "topk": sum(8 * math.ceil(0.1 * v.numel()) for v in adapter.values()),
    }[mode]
    assert all(r["bytes_up"] == 2 * per_client for r in rows)  # 2 clients per round
    assert all(r["bytes_down"] == 2 * state_nbytes(adapter) for r in rows)
    assert math.isfinite(rows[-1]["eval_loss"])


def test_int8_training_stays_close_to_uncompressed(local_data: Path, tmp_path: Path) -> None:
    a = run(tiny_config(local_data), tmp_path / "none")
    b = run(tiny_config(local_data, **{"federation.compression": "int8"}), tmp_path / "int8")
    assert b["final_eval_loss"]["all"] == pytest.approx(a["final_eval_loss"]["all"], rel=1e-3)


@pytest.mark.flower
def test_compressed_updates_over_flower_equal_inprocess(local_data: Path, tmp_path: Path) -> None:
    from fedloom.flower.simulation import run_simulation

    cfg = tiny_config(
        local_data, **{"federation.compression": "topk", "federation.algorithm": "scaffold"}
    )
    s = run_simulation(cfg, tmp_path / "sim")
    i = run(cfg, tmp_path / "inproc")
    assert s["final_eval_loss"]["all"] == pytest.approx(i["final_eval_loss"]["all"], abs=1e-6)
    assert s["bytes_up_total"] == i["bytes_up_total"]
