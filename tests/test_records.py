"""fedloom state dicts <-> Flower ArrayRecords: packed into one array per dtype plus a layout,
bit-identical after the round trip, and through Flower's own message serialisation."""

from __future__ import annotations

import pickle

import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedloom.flower.records import LAYOUT, from_record, to_record


def test_round_trip_is_bit_identical_for_every_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    state = {
        "layers.0.q.lora_A": torch.randn(4, 16, generator=g),
        "layers.0.q.lora_B": torch.randn(16, 4, generator=g).t(),  # not contiguous
        "scale": torch.randn(7, generator=g).to(torch.bfloat16),
        "index": torch.randint(0, 1000, (3, 2), dtype=torch.int32, generator=g),
        "q8": torch.randint(-127, 127, (5,), dtype=torch.int8, generator=g),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }
    record = to_record(state)
    # one array per dtype + the layout, however many tensors
    assert sorted(record) == [
        LAYOUT,
        "packed.bfloat16",
        "packed.float32",
        "packed.int32",
        "packed.int8",
    ]
    assert record["packed.float32"].shape == (4 * 16 + 16 * 4 + 0 + 1,)
    back = from_record(pickle.loads(pickle.dumps(record)))
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert torch.equal(back[k], v), k
    back["scalar"] += 1  # a writable copy, not a view of the record's buffer
    assert float(from_record(record)["scalar"]) == 2.5


def test_a_record_not_packed_by_fedloom_is_refused() -> None:
    foreign = ArrayRecord({"w": Array(torch.ones(2).numpy())})
    with pytest.raises(ValueError, match="not packed by fedloom"):
        from_record(foreign)
