"""Real deployments: ``fedloom server``, ``fedloom client``, ``fedloom certs``.

    fedloom certs certs/ --host 10.0.0.5               # a CA and a server certificate (tryout)
    fedloom server CONFIG --address 0.0.0.0:9092 --certificates certs/    # machine A
    fedloom client CONFIG --client-id 0 --server 10.0.0.5:9092 --certificates certs/   # B, C, ...

``server`` starts a Flower SuperLink (Fleet, Control and Runtime APIs on ``--address``), writes a
small Flower app whose ServerApp / ClientApp are :mod:`fedloom.flower.apps`, submits it with
``flwr run`` and streams the run's log; when the run ends it stops the SuperLink and its
SuperExec helpers. ``client`` runs a SuperNode holding client I's partition of CONFIG (its
node config carries ``partition-id`` and the config path) and keeps that client's model and
partition loaded in its own process for the ClientApps the SuperNode starts
(:mod:`fedloom.flower.worker`). Flower's telemetry, update check
and runtime dependency installation are off; nothing is contacted beyond the given addresses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
CERT_FILES = ("ca.pem", "server.pem", "server.key")


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """This process's environment with Flower offline and this Python's scripts on PATH (the
    SuperLink and SuperNode start `flower-superexec`, `flwr-serverapp`, `flwr-clientapp`)."""
    env = dict(os.environ) | FLOWER_ENV
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not HOST:PORT (e.g. 127.0.0.1:9092)")
    return host.strip("[]") or "127.0.0.1", int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with code {proc.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.3)
    raise TimeoutError(f"the SuperLink did not open {host}:{port} within {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process started with ``start_new_session`` and everything it started (the
    SuperLink detaches its SuperExec helpers into their own sessions: they are found by
    parentage and stopped too)."""
    below = descendants(proc.pid)
    # the whole group, even when the leader already exited: its children may outlive it
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _check_certs(certificates: str | None) -> Path | None:
    if certificates is None:
        return None
    d = Path(certificates)
    missing = [f for f in CERT_FILES if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--certificates {d}: missing {missing}; create a set with `fedloom certs {d}`"
        )
    return d


def app_dir(root: Path, config: Path, out: Path, resume: bool) -> Path:
    """A Flower app whose components are fedloom's; the run config carries the paths."""
    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedloomapp"
version = "1.0.0"
description = "fedloom federated fine-tuning (apps in the installed fedloom package)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedloom"

[tool.flwr.app.components]
serverapp = "fedloom.flower.apps:server_app"
clientapp = "fedloom.flower.client:client_app"

[tool.flwr.app.config]
fedloom-config = "{config}"
fedloom-out = "{out}"
fedloom-resume = {"true" if resume else "false"}
"""
    )
    return app


@contextlib.contextmanager
def superlink(
    address: str, certs: Path | None, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A running SuperLink on ``address``; yields (process, FLWR_HOME with its connection)."""
    host, port = split_address(address)
    home = Path(tempfile.mkdtemp(prefix="fedloom-flwr-"))
    connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    tls = f'root-certificates = "{certs / "ca.pem"}"' if certs else "insecure = true"
    (home / "config.toml").write_text(f'[superlink.fedloom]\naddress = "{connect}:{port}"\n{tls}\n')
    cmd = [_bin("flower-superlink"), "--host", host, "--port", str(port)]
    cmd += ["--disable-runtime-dependency-installation"]
    if certs:
        cmd += ["--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile"]
        cmd += [str(certs / "server.key"), "--ssl-ca-certfile", str(certs / "ca.pem")]
    else:
        cmd.append("--insecure")
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=flower_env(home), start_new_session=True
        )
    try:
        wait_for_port(connect, port, 120, proc)
        yield proc, home
    finally:
        stop_group(proc)


def serve(
    config: str, address: str, certificates: str | None, out: str, resume: bool = False
) -> int:
    """Start a SuperLink, run the federation on the SuperNodes that connect, stop."""
    certs = _check_certs(certificates)
    outp = Path(out).resolve()
    outp.mkdir(parents=True, exist_ok=True)
    log = outp / "superlink.log"
    with superlink(address, certs, log) as (_, home):
        app = app_dir(home, Path(config).resolve(), outp, resume)
        print(f"SuperLink on {address} (log: {log}); waiting for SuperNodes, then running")
        res = subprocess.run(
            [_bin("flwr"), "run", str(app), "fedloom", "--stream"], env=flower_env(home)
        )
    ok = (outp / "summary.json").exists()
    if res.returncode != 0 or not ok:
        print(f"fedloom: the Flower run did not finish (see {log})", file=sys.stderr)
        return 1
    print(f"outputs in {outp}/")
    return 0


def client_command(
    config: str, client_id: int, server: str, certificates: str | None, port: int | None = None
) -> list[str]:
    certs = _check_certs(certificates)
    split_address(server)
    node_config = f'partition-id={client_id} fedloom-config="{Path(config).resolve()}"'
    cmd = [_bin("flower-supernode"), "--superlink", server, "--node-config", node_config]
    cmd += ["--port", str(port or free_port())]
    cmd += ["--root-certificates", str(certs / "ca.pem")] if certs else ["--insecure"]
    return cmd


def run_client(
    config: str,
    client_id: int,
    server: str,
    certificates: str | None,
    threads: int | None = None,
    train_lock: str | None = None,
) -> int:
    """Run a SuperNode for client ``client_id`` in the foreground (Ctrl-C stops it), with
    this process as its training worker: the client's model and partition are loaded once
    here and serve every round (:mod:`fedloom.flower.worker`). Several SuperNodes on one
    machine: ``threads`` caps the CPU threads each trains with (they train at once), or a
    shared ``train_lock`` file makes them train in turn, each with all cores."""
    from fedloom.flower.worker import TrainWorker

    cmd = client_command(config, client_id, server, certificates)
    if threads is not None:  # before torch sizes its thread pool in the worker's build
        os.environ["FEDLOOM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    worker = TrainWorker(config, client_id, train_lock)
    worker.start()
    # SIGTERM (kill, systemd) as Ctrl-C: stop the SuperNode too, not leave it orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"SuperNode for client {client_id} -> {server}", flush=True)
    proc = subprocess.Popen(cmd, env=flower_env() | worker.env(), start_new_session=True)
    try:
        while proc.poll() is None:
            if worker.failed is not None:  # the model or data cannot be built: no use going on
                return 1
            time.sleep(0.5)
        return proc.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        stop_group(proc, grace=5)
        worker.close()


def make_certs(directory: str, hosts: list[str], days: int = 30) -> list[Path]:
    """A self-signed CA and a server certificate for ``hosts`` (IPs or names; 127.0.0.1 and
    localhost always), for trying TLS out. Use your organisation's CA in production."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedloom test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in dict.fromkeys(["127.0.0.1", "localhost", *hosts]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedloom superlink")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    no_enc = serialization.NoEncryption()
    fmt = serialization.PrivateFormat.PKCS8
    files = {
        "ca.pem": ca.public_bytes(pem),
        "ca.key": ca_key.private_bytes(pem, fmt, no_enc),
        "server.pem": cert.public_bytes(pem),
        "server.key": key.private_bytes(pem, fmt, no_enc),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
        if name.endswith(".key"):
            os.chmod(d / name, 0o600)
    return [d / n for n in files]
