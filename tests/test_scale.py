"""Scale: client state on disk (consistent across a cut-short round), a 747-client split made of
index lists into one shared data set (no per-client copies)."""

from __future__ import annotations

from pathlib import Path

import torch

from fedloom.data.partition import partition
from fedloom.engine.client_states import ClientStates


def test_client_states_live_on_disk_and_survive_a_cut_round(tmp_path: Path) -> None:
    store = ClientStates(tmp_path / "cs")
    for cid in range(747):
        store[cid] = {"control": {"w": torch.full((2, 2), float(cid))}}
    store[5] = {}  # an empty state costs nothing
    assert len(store) == 746 and 5 not in store
    # memory holds only the index (client -> file name), tensors are on disk
    assert all(isinstance(v, str) for v in store.index().values())
    assert torch.equal(store[700]["control"]["w"], torch.full((2, 2), 700.0))
    checkpointed = store.index()  # as written into checkpoint.pt after a round
    store.collect()
    # the next round rewrites client 3, then the run dies before its checkpoint
    store[3] = {"control": {"w": torch.zeros(2, 2)}}
    resumed = ClientStates(tmp_path / "cs", checkpointed)
    resumed.collect()  # drops the unfinished round's file
    assert torch.equal(resumed[3]["control"]["w"], torch.full((2, 2), 3.0))
    assert len(list((tmp_path / "cs").glob("*.pt"))) == 746


def test_747_client_split_is_index_lists_over_shared_data() -> None:
    # FedLLM-Bench-like: 747 users, each example labelled with its user
    meta = [{"user": f"u{i % 747:03d}"} for i in range(3000)]
    for strategy, n in (("iid", 747), ("natural", None)):
        clients = partition(strategy, meta, n, key="user", seed=0, min_examples=1)
        assert len(clients) == 747
        assert sorted(i for c in clients for i in c) == list(range(3000))
        assert all(type(i) is int for c in clients for i in c)
