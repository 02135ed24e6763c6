"""Real deployments: ``fedloom server``, ``fedloom client``, ``fedloom certs``.

    fedloom certs certs/ --host 10.0.0.5               # a CA and a server certificate (tryout)
    fedloom server CONFIG --address 0.0.0.0:9092 --certificates certs/    # machine A
    fedloom client CONFIG --client-id 0 --server 10.0.0.5:9092 --certificates certs/   # B, C, ...

``server`` starts a Flower SuperLink (Fleet, Control and Runtime APIs on ``--address``), writes a
small Flower app whose ServerApp / ClientApp are :mod:`fedloom.flower.apps` /
:mod:`fedloom.flower.client`, submits it with ``flwr run`` and streams the run's log; when the run
ends it stops the SuperLink and its SuperExec helpers. ``client`` runs a SuperNode holding client
I's partition of CONFIG (its node config carries ``partition-id`` and the config path) in
``--isolation process`` mode, and is itself that SuperNode's SuperExec and ClientApp process:
client I's model and partition are loaded once, in this process, and its ClientApp tasks run
here (:mod:`fedloom.flower.worker`). Flower's telemetry, update check and runtime dependency
installation are off; nothing is contacted beyond the given addresses (the SuperNode's Runtime
API listens on 127.0.0.1 only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fedloom.errors import FedloomError, env_int

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
CERT_FILES = ("ca.pem", "server.pem", "server.key")
NICE_ENV = "FEDLOOM_FLOWER_NICE"


def flower_nice() -> int:
    """CPU priority (``nice`` increment, 0-19) of the Flower processes fedloom starts: the
    SuperLink (and through it the ServerApp process), ``flwr run`` and each SuperNode.
    ``FEDLOOM_FLOWER_NICE``, default 19: their polling, heartbeats and message handling take a
    core when training leaves one free instead of preempting a training thread mid-step (with
    as many training threads as cores, every preemption stalls the other threads at their next
    barrier). Measured here: a background load of 12% of a core (100 wake-ups/s) made a
    SmolLM2 client round 8% slower at nice 0 and left it unchanged at nice 19. Training itself
    (``fedloom client``'s own process, the in-process engine) keeps the normal priority."""
    nice = env_int(NICE_ENV, 19, minimum=0, maximum=19)
    return 19 if nice is None else nice


def _lower_priority(nice: int, die_with_parent: bool = False) -> Callable[[], None]:
    """A ``preexec_fn``: the child runs at ``nice``; with ``die_with_parent`` (Linux) it gets
    SIGTERM when this process dies, even by SIGKILL (``PR_SET_PDEATHSIG``). libc's ``prctl``
    is looked up here, before the fork: the child only calls it."""
    prctl = None
    if die_with_parent and sys.platform == "linux":
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        os.nice(nice)
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return preexec


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
        raise DeployError(f"address {address!r} is not HOST:PORT (e.g. 127.0.0.1:9092)")
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


CLIENT_CERT_FILES = ("ca.pem",)
"""A SuperNode needs only the CA certificate: never the server's certificate or private key."""


def _check_certs(certificates: str | None, needed: tuple[str, ...] = CERT_FILES) -> Path | None:
    if certificates is None:
        return None
    d = Path(certificates)
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        hint = (
            f"create a set with `fedloom certs {d}`"
            if needed == CERT_FILES
            else "copy the CA certificate ca.pem from the server's `fedloom certs` folder"
        )
        raise DeployError(f"--certificates {d}: missing {missing}; {hint}")
    return d


class DeployError(FedloomError, FileNotFoundError):
    """A deployment input (certificates, address) is missing or wrong."""


def app_dir(root: Path, config: Path, out: Path, resume: bool) -> Path:
    """A Flower app whose components are fedloom's; the run config carries the paths."""
    from fedloom.flower.client import CLIENT_APP_REF

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
clientapp = "{CLIENT_APP_REF}"

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
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=flower_env(home),
            start_new_session=True,
            preexec_fn=_lower_priority(flower_nice()),
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
            [_bin("flwr"), "run", str(app), "fedloom", "--stream"],
            env=flower_env(home),
            preexec_fn=_lower_priority(flower_nice()),
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
    """A plain SuperNode for client ``client_id`` (Flower's default isolation: a fresh
    ``flwr-clientapp`` process per message); ``run_client`` adds process isolation."""
    certs = _check_certs(certificates, CLIENT_CERT_FILES)
    split_address(server)
    node_config = f'partition-id={client_id} fedloom-config="{Path(config).resolve()}"'
    cmd = [_bin("flower-supernode"), "--superlink", server, "--node-config", node_config]
    cmd += ["--host", "127.0.0.1", "--port", str(port or free_port())]
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
    """Run client ``client_id`` in the foreground until its SuperNode stops (Ctrl-C stops both):
    a SuperNode in ``--isolation process`` mode, and this process as its SuperExec and ClientApp
    process, with the client's model and partition loaded once (:mod:`fedloom.flower.worker`).
    Several clients on one machine: ``threads`` caps the CPU threads each trains with (they
    train at once), or a shared ``train_lock`` file makes them train in turn, each with all
    cores."""
    from fedloom.flower.worker import LoadedClient, TaskExecutor

    if threads is not None:  # before torch sizes its thread pool in the build
        os.environ["FEDLOOM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    runtime_port = free_port()
    cmd = client_command(config, client_id, server, certificates, port=runtime_port)
    private = Path(tempfile.mkdtemp(prefix="fedloom-client-"))  # mode 0700
    secret = secrets.token_bytes(32)
    secret_file = private / "superexec-secret"
    secret_file.touch(mode=0o600)
    secret_file.write_bytes(secret)
    cmd += ["--isolation", "process", "--superexec-auth-secret-file", str(secret_file)]
    client = LoadedClient(config, client_id, train_lock)
    # SIGTERM (kill, systemd) as Ctrl-C: stop the SuperNode too, not leave it orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"SuperNode for client {client_id} -> {server}", flush=True)
    proc = subprocess.Popen(
        cmd,
        env=flower_env() | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,  # its log goes through this process (TaskExecutor.watch)
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # lower priority than this process's training (see flower_nice); and it dies with
        # this process (an orphaned SuperNode would hold tasks with nobody to run them)
        preexec_fn=_lower_priority(flower_nice(), die_with_parent=True),
    )
    client.start()  # builds in the background: the SuperNode's queries are answered meanwhile
    executor = TaskExecutor(f"127.0.0.1:{runtime_port}", secret, client.app)
    assert proc.stdout is not None
    executor.watch(proc.stdout, sys.stdout)  # a stored message: claim its task at once
    try:
        # tasks run on this (main) thread, as in-process: see TaskExecutor
        executor.serve(
            done=lambda: proc.poll() is not None or client.failed is not None, idle=client.idle
        )
        return 1 if client.failed is not None else proc.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        executor.close()
        stop_group(proc, grace=5)
        shutil.rmtree(private, ignore_errors=True)


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
        path = d / name
        if name.endswith(".key"):  # private from the first byte: created 0600, never wider
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            path.write_bytes(data)
    return [d / n for n in files]
