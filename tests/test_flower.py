"""Flower runtime: deployment on loopback (a SuperLink and SuperNodes as subprocesses, plain and
TLS) equals the in-process engine; the Simulation Runtime runs every algorithm; a client whose
process is killed (SIGKILL) is recorded as failed and the rounds go on with the others. Every
process is started and stopped here, with bounded timeouts."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedloom.algorithms import ALGORITHMS
from fedloom.engine import run
from fedloom.flower.deploy import descendants, free_port, stop_group, superlink
from tests.conftest import tiny_config

pytestmark = pytest.mark.flower

FEDLOOM = [sys.executable, "-m", "fedloom.cli"]


def _adapter(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "adapter" / "adapter_model.safetensors"))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _deploy(
    cfg_path: Path,
    out: Path,
    n: int,
    extra: list[str],
    kill_after_round: int | None = None,
    client_extra: list[str] | None = None,
):  # type: ignore[no-untyped-def]
    port = free_port()
    server = _start(
        [
            *FEDLOOM,
            "server",
            str(cfg_path),
            "--address",
            f"127.0.0.1:{port}",
            "--out",
            str(out),
            *extra,
        ],
        out.parent / f"{out.name}-server.log",
    )
    clients = [
        _start(
            [
                *FEDLOOM,
                "client",
                str(cfg_path),
                "--client-id",
                str(i),
                "--server",
                f"127.0.0.1:{port}",
                *(extra if client_extra is None else client_extra),
            ],
            out.parent / f"{out.name}-client{i}.log",
        )
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + 420
        while server.poll() is None and time.monotonic() < deadline:
            metrics = out / "metrics.jsonl"
            if (
                kill_after_round is not None
                and metrics.exists()
                and len(metrics.read_text().splitlines()) >= kill_after_round
            ):
                # the last `fedloom client` process is killed outright (SIGKILL: no clean-up);
                # its SuperNode must not outlive it (it would hold tasks nobody runs)
                supernodes = descendants(clients[-1].pid)
                os.kill(clients[-1].pid, signal.SIGKILL)
                gone_by = time.monotonic() + 30
                while time.monotonic() < gone_by and any(_alive(p) for p in supernodes):
                    time.sleep(0.2)
                assert supernodes and not any(_alive(p) for p in supernodes)
                kill_after_round = None
            time.sleep(0.5)
        assert server.poll() is not None, "the deployment did not finish within 420 s"
        log = (out.parent / f"{out.name}-server.log").read_text()
        assert server.returncode == 0, log[-3000:]
    finally:
        for p in [server, *clients]:
            stop_group(p, grace=5)


@pytest.fixture()
def two_clients(local_data: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(**over):  # type: ignore[no-untyped-def]
        cfg = tiny_config(local_data, **{"federation.rounds": 2, **over})
        path = tmp_path / "cfg.yaml"
        cfg.save(path)
        return cfg, path

    return make


def test_deployment_over_tls_equals_inprocess(two_clients, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A SuperLink and two `fedloom client`s on loopback, over TLS, clients holding only the CA
    certificate, running SCAFFOLD (its client control must persist in the SuperNode's
    Context.state): the same adapter as the in-process engine. (One deployment for both
    checks keeps the suite fast; the plain, insecure transport runs in the tests below.)"""
    certs = tmp_path / "certs"
    assert subprocess.run([*FEDLOOM, "certs", str(certs)], timeout=60).returncode == 0
    for key in ("ca.key", "server.key"):  # private keys: owner-only from creation
        assert (certs / key).stat().st_mode & 0o777 == 0o600
    # as the docs say: a client machine holds the CA certificate only, never the server's key
    client_certs = tmp_path / "client-certs"
    client_certs.mkdir()
    (client_certs / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
    cfg, path = two_clients(**{"federation.algorithm": "scaffold"})
    run(cfg, tmp_path / "inproc")
    _deploy(
        path,
        tmp_path / "flower",
        2,
        ["--certificates", str(certs)],
        client_extra=["--certificates", str(client_certs)],
    )
    _assert_close(_adapter(tmp_path / "flower"), _adapter(tmp_path / "inproc"))
    rows = [json.loads(x) for x in (tmp_path / "flower" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2] and all(r["bytes_up"] > 0 for r in rows)
    # each client's model was loaded once, by its `fedloom client`, and trained both rounds in
    # that process: its SuperNode started no `flwr-clientapp` process
    for i in range(2):
        log = (tmp_path / f"flower-client{i}.log").read_text()
        assert log.count("model and partition loaded") == 1, log[-2000:]
        assert log.count(f"client {i}: trained, update sent") == 2, log[-2000:]
        assert "flwr-clientapp` process" not in log, log[-2000:]
    # the SuperLink speaks TLS with the generated certificate: verified handshake with the CA,
    # and a plain-text request gets no HTTP answer
    port = free_port()
    with superlink(f"127.0.0.1:{port}", certs, tmp_path / "probe.log"):
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not plain.recv(64).startswith(b"HTTP/")


def test_killed_client_is_recorded_and_rounds_go_on(two_clients, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, path = two_clients(
        **{"federation.rounds": 3, "federation.min_clients": 1, "federation.client_timeout": 45}
    )
    _deploy(path, tmp_path / "faulty", 2, [], kill_after_round=1)
    rows = [json.loads(x) for x in (tmp_path / "faulty" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[0]["failed_clients"] == {}
    for r in rows[1:]:
        # either no reply before client_timeout, or the SuperLink's error for a lost node
        why = r["failed_clients"]["1"]
        assert set(r["failed_clients"]) == {"1"} and ("no reply" in why or "client error" in why)
        assert list(r["client_loss"]) == ["0"]


@pytest.mark.parametrize(
    "algorithm",
    [
        a if a in ("fedavg", "scaffold", "fedadam") else pytest.param(a, marks=pytest.mark.slow)
        for a in sorted(ALGORITHMS)
    ],
)
def test_simulation_runtime_every_algorithm(
    local_data: Path, tmp_path: Path, algorithm: str
) -> None:
    from fedloom.flower.simulation import run_simulation

    cfg = tiny_config(
        local_data, **{"federation.algorithm": algorithm, "federation.rounds": 3, "eval.every": 3}
    )
    s = run_simulation(cfg, tmp_path / "sim")
    rows = [json.loads(x) for x in (tmp_path / "sim" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3] and "eval_loss" in rows[-1]
    assert s["algorithm"] == algorithm
    inproc = run(cfg, tmp_path / "inproc")
    assert s["final_eval_loss"]["all"] == pytest.approx(inproc["final_eval_loss"]["all"], abs=1e-5)


def test_secagg_deployment_equals_fedavg_within_quantisation(
    two_clients, local_data: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """SecAgg+ over a loopback deployment (SuperLink + 2 SuperNodes): the server unmasks only
    the weighted sum, and the final adapter equals plain in-process FedAvg up to SecAgg+'s
    integer quantisation (one round: later rounds would compound the rounding through training).
    No client's own update norm reaches the server."""
    from fedloom.privacy.secagg import secagg_tolerance

    secagg = {"clipping_range": 0.5}
    cfg, path = two_clients(privacy={"secagg": secagg}, **{"federation.rounds": 1})
    _deploy(path, tmp_path / "sa", 2, [])
    plain = tiny_config(local_data, **{"federation.rounds": 1})
    run(plain, tmp_path / "plain")
    a, b = _adapter(tmp_path / "sa"), _adapter(tmp_path / "plain")
    tol = secagg_tolerance(cfg.privacy.secagg, 2)
    diffs = [float((a[k] - b[k]).abs().max()) for k in a]
    assert max(diffs) <= tol, (max(diffs), tol)
    assert max(diffs) > 0  # quantised: not bit-identical, so the masked path really ran
    rows = [json.loads(x) for x in (tmp_path / "sa" / "metrics.jsonl").read_text().splitlines()]
    assert all("client_update_norm" in r and not r["client_update_norm"] for r in rows)


def test_secagg_needs_flower_and_two_clients(local_data: Path, tmp_path: Path) -> None:
    from fedloom.config import ConfigError

    cfg = tiny_config(local_data, privacy={"secagg": {}})
    with pytest.raises(ConfigError, match="runs on the Flower engines"):
        run(cfg, tmp_path)
    with pytest.raises(ConfigError, match="at least 2 clients per round"):
        tiny_config(local_data, privacy={"secagg": {}}, **{"federation.sample_clients": 1})
    with pytest.raises(ConfigError, match="compression: none"):
        tiny_config(local_data, privacy={"secagg": {}}, **{"federation.compression": "int8"})
