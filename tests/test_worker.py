"""``fedloom client``'s process: the loaded client answers like the in-process client, keeps
persistent state, refuses other partitions and reports a failed build; its task executor turns
a raising ClientApp into an error reply and refuses runs of other apps. (End to end, against a
real SuperNode and SuperLink: tests/test_flower.py.)"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedloom.engine.inprocess import Federation
from fedloom.flower import apps, worker
from fedloom.flower.deploy import app_dir
from fedloom.flower.records import from_record, load_client_state, read_train, train_content
from fedloom.flower.worker import LoadedClient, TaskExecutor, check_app, poll_interval
from tests.conftest import tiny_config


def _ctx(pid: int) -> Context:
    return Context(
        run_id=1, node_id=7, node_config={"partition-id": pid}, state=RecordDict(), run_config={}
    )


@pytest.fixture()
def scaffold_client(local_data: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = tiny_config(local_data, **{"federation.algorithm": "scaffold"})
    path = tmp_path / "cfg.yaml"
    cfg.save(path)
    client = LoadedClient(str(path), 1)
    client.start()
    return cfg, client


def _train_message(cfg, cid: int) -> RecordDict:  # type: ignore[no-untyped-def]
    fed = Federation.build(cfg)
    return train_content(fed.strategy.broadcast(cid), 0, cid, cfg.train.lr)


def _flat(state: dict) -> dict[str, torch.Tensor]:  # type: ignore[type-arg]
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out |= {f"{k}.{kk}": vv for kk, vv in _flat(v).items()}
        else:
            out[k] = v
    return out


def test_loaded_client_answers_like_the_inprocess_client(scaffold_client) -> None:  # type: ignore[no-untyped-def]
    """The `fedloom client` process's reply to a train message equals, bit for bit, what a
    separately built in-process Federation computes for the same client and broadcast (the
    loaded client's cached Federation is not the one compared against)."""
    cfg, client = scaffold_client
    content = _train_message(cfg, 1)
    assert client.secagg(_ctx(1)) is False
    reply, state = client.train(content, _ctx(1))
    inproc = Federation.build(cfg)
    assert inproc is not apps.client_federation(cfg)
    bc, round_idx, cid, lr = read_train(content)
    expected = inproc.fit_client(round_idx, cid, lr, bc)
    got = from_record(reply.array_records["payload"])
    assert got.keys() == expected.payload.keys() and got
    for k, want in expected.payload.items():
        torch.testing.assert_close(got[k], want, rtol=0, atol=0)
    assert dict(reply.metric_records["metrics"])["client-id"] == 1
    # SCAFFOLD's client control c_i travels back as the client's persistent state, equal to
    # the in-process client's, and it moved off zero
    c_i, want_state = _flat(load_client_state(state)), _flat(inproc.client_states[1])
    assert c_i and c_i.keys() == want_state.keys()
    for k, want in want_state.items():
        torch.testing.assert_close(c_i[k], want, rtol=0, atol=0)
    assert any(float(v.abs().sum()) > 0 for v in c_i.values())


def test_loaded_client_refuses_other_partitions(scaffold_client) -> None:  # type: ignore[no-untyped-def]
    _, client = scaffold_client
    with pytest.raises(RuntimeError, match="partition 0 reached the fedloom client of partition 1"):
        client.train(RecordDict(), _ctx(0))
    with pytest.raises(RuntimeError, match="partition 3 reached"):
        client.secagg(_ctx(3))


def test_loaded_client_reports_a_failed_build(
    local_data: Path,
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    def boom(cfg, only=None):  # type: ignore[no-untyped-def]
        raise FileNotFoundError("no such model file: x.gguf")

    monkeypatch.setattr(apps, "client_federation", boom)
    path = tmp_path / "cfg.yaml"
    tiny_config(local_data).save(path)
    client = LoadedClient(str(path), 0)
    client.start()
    with pytest.raises(RuntimeError, match="client 0 could not be built: FileNotFoundError"):
        client.train(RecordDict(), _ctx(0))
    assert client.failed == "FileNotFoundError: no such model file: x.gguf"


def test_loaded_client_refuses_a_client_id_outside_the_partition(
    local_data: Path, tmp_path: Path
) -> None:
    path = tmp_path / "cfg.yaml"
    tiny_config(local_data).save(path)
    client = LoadedClient(str(path), 9)
    client.start()
    assert client.built.wait(120)
    assert client.failed is not None and "client 9 does not exist" in client.failed


def test_loaded_client_holds_only_its_own_shard(local_data: Path, tmp_path: Path) -> None:
    from fedloom.flower.apps import client_federation

    path = tmp_path / "cfg.yaml"
    cfg = tiny_config(local_data)
    cfg.save(path)
    client = LoadedClient(str(path), 1)
    client.start()
    assert client.built.wait(120) and client.failed is None
    fed = client_federation(client.cfg, 1)
    sizes = fed.data.client_sizes()
    assert sizes[1] > 0 and sum(sizes) == sizes[1] == len(fed.data.train)


def _fab(tmp_path: Path, clientapp: str | None = None) -> bytes:
    app = app_dir(tmp_path, tmp_path / "cfg.yaml", tmp_path / "out", resume=False)
    text = (app / "pyproject.toml").read_text()
    if clientapp is not None:
        text = text.replace("fedloom.flower.client:client_app", clientapp)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pyproject.toml", text)
    return buf.getvalue()


def test_executor_runs_only_fedloom_apps(tmp_path: Path) -> None:
    check_app(_fab(tmp_path))  # the app `fedloom server` submits
    with pytest.raises(RuntimeError, match="the run's ClientApp is 'other.app:client_app'"):
        check_app(_fab(tmp_path, "other.app:client_app"))


def test_a_raising_client_app_becomes_an_error_reply(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The executor survives a failing task: the SuperNode gets an error reply (the server
    records the client as failed with this reason) and a FAILED task status."""
    pushed: dict[str, object] = {}

    class Fab:
        content = _fab(tmp_path)

    def pull(client):  # type: ignore[no-untyped-def]
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 3, 1, 7
        msg = Message(RecordDict(), dst_node_id=7, message_type=MessageType.TRAIN)
        return msg, _ctx(0), None, Fab()

    def app(message, context):  # type: ignore[no-untyped-def]
        raise ValueError("out of memory while training")

    class Beat:
        def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
            pass

        def start(self) -> None:
            pushed["heartbeat"] = True

        def stop(self) -> None:
            pass

    for attr in ("_task_id", "_run_id", "_node_id"):  # restored after the test
        monkeypatch.setattr(TaskIdentity, attr, None)
    monkeypatch.setattr(worker, "pull_task_input", pull)
    monkeypatch.setattr(worker, "HeartbeatSender", Beat)
    monkeypatch.setattr(worker, "push_message", lambda c, m, ctx: pushed.update(reply=m))
    monkeypatch.setattr(
        worker, "push_task_output", lambda c, ctx, s, d: pushed.update(status=s, details=d)
    )
    executor = TaskExecutor("127.0.0.1:9", b"secret", app, poll=0.1)  # type: ignore[arg-type]
    executor.run_task("token")
    reply = pushed["reply"]
    assert isinstance(reply, Message) and reply.has_error()
    assert "out of memory while training" in reply.error.reason
    assert pushed["status"] == "failed" and "ValueError" in str(pushed["details"])
    assert pushed["heartbeat"] and executor.tasks == 1


def test_poll_interval_follows_flowers_setting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", raising=False)
    assert poll_interval() == 1.0
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.25")
    assert poll_interval() == 0.25
    for bad in ("0", "fast", "120"):
        monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", bad)
        with pytest.raises(ValueError, match="between 0.01 and 60"):
            poll_interval()


def test_machine_lock_makes_workers_train_in_turn(tmp_path: Path) -> None:
    import threading
    import time

    from fedloom.utils import machine_lock

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


def test_a_stored_message_is_claimed_at_once_not_at_the_next_poll() -> None:
    """The SuperNode's log passes through `watch` unchanged; its "Received successfully" line
    makes `serve` poll at once, though the poll interval is a minute."""
    import threading
    import time

    from flwr.proto.runtime_pb2 import AcquireTaskResponse

    polls: list[float] = []

    class Runtime:
        def AcquireTask(self, request: object) -> AcquireTaskResponse:  # noqa: N802
            polls.append(time.monotonic())
            return AcquireTaskResponse()  # no task

        def close(self) -> None:
            pass

    executor = TaskExecutor("127.0.0.1:9", b"secret", None, poll=60.0)  # type: ignore[arg-type]
    executor._acquire = Runtime()  # type: ignore[assignment]
    idled = threading.Event()
    server = threading.Thread(target=executor.serve, kwargs={"idle": idled.set})
    server.start()
    assert idled.wait(10) and len(polls) == 1  # polled once, now waiting out the interval
    log = b"INFO :      [RUN 1, ROUND 1]\nINFO :      Received successfully\nbye\n"
    echo = io.StringIO()
    executor.watch(io.BytesIO(log), echo).join(10)
    deadline = time.monotonic() + 10
    while len(polls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    executor.stop()
    server.join(10)
    assert echo.getvalue() == log.decode()
    assert len(polls) >= 2 and polls[1] - polls[0] < 5  # woken, not after the 60 s poll
    assert not server.is_alive()
