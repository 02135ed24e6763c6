"""A SuperNode's training worker: client I's model and partition, loaded once, in the
``fedloom client`` process, serving the ClientApp processes its SuperNode starts (see
:mod:`fedloom.flower.client` for why).

It listens on a Unix socket in a fresh private (0700) folder, with a random key that only the
SuperNode's environment carries (``multiprocessing.connection``'s HMAC handshake refuses any
other caller). Requests are ``("info", pid)`` -> ``{"client_id", "secagg"}`` and
``("train", pid, content, state)`` -> ``(reply content, new client state records)``, answered
by the same :func:`fedloom.flower.apps.train_reply` the simulation runs. A failure comes back
as its message and is raised in the ClientApp, so the server records the client as failed
with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

ADDRESS_ENV = "FEDLOOM_WORKER"
KEY_ENV = "FEDLOOM_WORKER_KEY"


def ask(worker: tuple[str, bytes], request: tuple[Any, ...]) -> Any:
    """Send one request to the worker at ``worker`` = (socket path, key); its answer."""
    address, key = worker
    try:
        conn = Client(address, family="AF_UNIX", authkey=key)
    except OSError as e:
        raise RuntimeError(
            f"the fedloom training worker at {address} is not reachable ({e}): is its "
            "`fedloom client` process still running?"
        ) from e
    with conn:
        conn.send(request)
        try:
            status, answer = conn.recv()
        except EOFError as e:
            raise RuntimeError("the fedloom training worker closed the connection") from e
    if status != "ok":
        raise RuntimeError(f"training worker: {answer}")
    return answer


@contextlib.contextmanager
def machine_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); nothing when None."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class TrainWorker:
    """Serve client ``client_id`` of the run config at ``config`` until :meth:`close`.

    The model and data are built in the background at :meth:`start` (an ``info`` request is
    answered at once; a ``train`` waits for the build). ``failed`` holds the build's error, if
    any. With ``train_lock`` (a file path), training holds an exclusive lock on that file:
    workers on one machine given the same file train one at a time, each with all cores."""

    def __init__(self, config: str, client_id: int, train_lock: str | None = None) -> None:
        self.client_id, self.train_lock = client_id, train_lock
        self.dir = Path(tempfile.mkdtemp(prefix="fedloom-worker-"))  # mode 0700
        self.address = str(self.dir / "socket")
        self.key = secrets.token_bytes(32)
        self.listener = Listener(self.address, family="AF_UNIX", authkey=self.key)
        self.built = threading.Event()
        self.failed: str | None = None
        from fedloom.config import load_config

        self.cfg = load_config(config)

    def env(self) -> dict[str, str]:
        """What the SuperNode's environment must carry for its ClientApps to find this."""
        return {ADDRESS_ENV: self.address, KEY_ENV: self.key.hex()}

    def start(self) -> None:
        threading.Thread(target=self._build, name="fedloom-build", daemon=True).start()
        threading.Thread(target=self._accept, name="fedloom-worker", daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _build(self) -> None:
        try:
            from fedloom.flower.apps import client_federation

            fed = client_federation(self.cfg)
            n = len(fed.data.clients)
            if not 0 <= self.client_id < n:
                raise ValueError(
                    f"client {self.client_id} does not exist: the config's partition has {n} "
                    f"clients (--client-id 0..{n - 1})"
                )
            print(f"client {self.client_id}: model and partition loaded", flush=True)
        except Exception as e:  # noqa: BLE001  (reported to the user and to every request)
            self.failed = f"{type(e).__name__}: {e}"
            print(f"fedloom client {self.client_id}: {self.failed}", file=sys.stderr, flush=True)
        finally:
            self.built.set()

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except OSError:  # closed
                return
            except Exception:  # noqa: BLE001  (a caller without the key: refuse it, go on)
                continue
            # one request at a time, on this thread: a SuperNode hands its ClientApps one
            # message at a time, and the one model trains one round at a time
            self._serve(conn)

    def _serve(self, conn: Connection) -> None:
        with conn:
            try:
                answer = ("ok", self._answer(conn.recv()))
            except Exception as e:  # noqa: BLE001  (sent back: the ClientApp raises it)
                detail = "".join(traceback.format_exception_only(e)).strip()
                print(traceback.format_exc(), file=sys.stderr, flush=True)
                answer = ("error", detail)
            with contextlib.suppress(OSError):  # the ClientApp is gone (killed, timed out)
                conn.send(answer)

    def _answer(self, request: tuple[Any, ...]) -> Any:
        kind, pid = request[0], int(request[1])
        if pid != self.client_id:
            raise RuntimeError(
                f"a ClientApp of partition {pid} reached the worker of client {self.client_id}"
            )
        if kind == "info":
            return {"client_id": self.client_id, "secagg": self.cfg.privacy.secagg is not None}
        if kind == "train":
            self.built.wait()
            if self.failed is not None:
                raise RuntimeError(f"client {self.client_id} could not be built: {self.failed}")
            from fedloom.flower.apps import train_reply

            _, _, content, state = request
            with machine_lock(self.train_lock):  # with a lock file: one training per machine
                t = time.perf_counter()
                answer = train_reply(self.cfg, content, state, pid)
            print(
                f"client {pid}: trained, update sent ({time.perf_counter() - t:.1f} s)", flush=True
            )
            return answer
        raise ValueError(f"unknown request {kind!r}")
