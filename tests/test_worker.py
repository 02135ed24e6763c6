"""The deployed client's training worker (``fedloom client`` keeps the model loaded between
rounds) and the relay ClientApp that forwards to it: same reply as the in-process client,
persistent state returned, wrong callers refused, build errors reported, relay import light."""

from __future__ import annotations

import subprocess
import sys
from multiprocessing import AuthenticationError
from pathlib import Path

import pytest
import torch
from flwr.app import RecordDict

from fedloom.engine.inprocess import Federation
from fedloom.flower import apps
from fedloom.flower.records import from_record, load_client_state, train_content
from fedloom.flower.worker import ADDRESS_ENV, KEY_ENV, TrainWorker, ask
from tests.conftest import tiny_config


@pytest.fixture()
def scaffold_worker(local_data: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = tiny_config(local_data, **{"federation.algorithm": "scaffold"})
    path = tmp_path / "cfg.yaml"
    cfg.save(path)
    worker = TrainWorker(str(path), 1)
    worker.start()
    yield cfg, worker
    worker.close()


def _train_message(cfg, cid: int) -> RecordDict:  # type: ignore[no-untyped-def]
    fed = Federation.build(cfg)
    return train_content(fed.strategy.broadcast(cid), 0, cid, cfg.train.lr)


def test_worker_answers_like_the_inprocess_client(scaffold_worker) -> None:  # type: ignore[no-untyped-def]
    cfg, worker = scaffold_worker
    content = _train_message(cfg, 1)
    assert worker.env() == {ADDRESS_ENV: worker.address, KEY_ENV: worker.key.hex()}
    assert ask((worker.address, worker.key), ("info", 1)) == {"client_id": 1, "secagg": False}
    reply, state = ask((worker.address, worker.key), ("train", 1, content, RecordDict()))
    expected, expected_state = apps.train_reply(cfg, content, RecordDict(), 1)
    got = from_record(reply.array_records["payload"])
    want = from_record(expected.array_records["payload"])
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert dict(reply.metric_records["metrics"])["client-id"] == 1
    # SCAFFOLD's client control travels back as the client's persistent state
    c_i = load_client_state(state)
    assert c_i and c_i.keys() == load_client_state(expected_state).keys()
    assert any(float(v.abs().sum()) > 0 for t in c_i.values() for v in t.values())


def test_worker_refuses_other_callers_and_clients(scaffold_worker) -> None:  # type: ignore[no-untyped-def]
    cfg, worker = scaffold_worker
    with pytest.raises(AuthenticationError):
        ask((worker.address, b"not the key"), ("info", 1))
    with pytest.raises(RuntimeError, match="partition 0 reached the worker of client 1"):
        ask((worker.address, worker.key), ("info", 0))
    with pytest.raises(RuntimeError, match="unknown request 'fit'"):
        ask((worker.address, worker.key), ("fit", 1))
    # still serving after the refusals
    assert ask((worker.address, worker.key), ("info", 1))["client_id"] == 1


def test_worker_reports_a_failed_build(local_data: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom(cfg):  # type: ignore[no-untyped-def]
        raise FileNotFoundError("no such model file: x.gguf")

    monkeypatch.setattr(apps, "client_federation", boom)
    path = tmp_path / "cfg.yaml"
    tiny_config(local_data).save(path)
    worker = TrainWorker(str(path), 0)
    worker.start()
    try:
        with pytest.raises(RuntimeError, match="client 0 could not be built: FileNotFoundError"):
            ask((worker.address, worker.key), ("train", 0, RecordDict(), RecordDict()))
        assert worker.failed == "FileNotFoundError: no such model file: x.gguf"
    finally:
        worker.close()
    with pytest.raises(RuntimeError, match="is not reachable"):
        ask((worker.address, worker.key), ("info", 0))


def test_relay_client_app_imports_no_torch() -> None:
    # the ClientApp a SuperNode starts for every message must start fast: Flower only
    code = "import sys, fedloom.flower.client; assert 'torch' not in sys.modules, 'torch'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_machine_lock_makes_workers_train_in_turn(tmp_path: Path) -> None:
    import threading
    import time

    from fedloom.flower.worker import machine_lock

    lock, order = str(tmp_path / "train.lock"), []
    holding, trying = threading.Event(), threading.Event()

    def first() -> None:
        with machine_lock(lock):
            order.append("first in")
            holding.set()
            trying.wait(10)
            time.sleep(0.3)  # `second` is blocked on the lock meanwhile (a broken lock: it enters)
            order.append("first out")

    def second() -> None:
        holding.wait(10)
        trying.set()
        with machine_lock(lock):  # a separate open file: waits until `first` lets go
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert order == ["first in", "first out", "second in"]
    with machine_lock(None):  # no lock file: nothing to wait for
        pass
