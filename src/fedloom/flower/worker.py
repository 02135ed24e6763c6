"""``fedloom client``: one process that holds client I's model and partition and runs its
SuperNode's ClientApp tasks itself.

A SuperNode in Flower's default isolation (``subprocess``) has a SuperExec start a fresh
``flwr-clientapp`` process for every message: Flower's own imports take ~3.5 s of CPU here
before the ClientApp runs, and a ClientApp that trains would then import torch, transformers
and PEFT and load its model again, every round. ``fedloom client`` starts its SuperNode with
``--isolation process`` instead and is that SuperNode's SuperExec and ClientApp process at once:

- :class:`LoadedClient` builds the client's :class:`~fedloom.engine.Federation` once (in the
  background, at start) and is the ClientApp's train function: the same
  :func:`fedloom.flower.apps.train_reply` the simulation runs.
- :class:`TaskExecutor` claims the SuperNode's ClientApp tasks on its Runtime API (loopback;
  ``AcquireTask`` is signed with a random per-process secret that only this process and its
  SuperNode hold) and runs each as ``flwr-clientapp`` does, with Flower's own functions for
  each step: pull the message and the run's Context, call the ClientApp, push the reply and the
  updated Context, heartbeats meanwhile. A ClientApp that raises becomes an error reply (the
  server records the client as failed with the reason) and the executor goes on.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

import httpx
from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.config import get_fab_config
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

import fedloom.flower  # noqa: F401  (offline Flower settings)
from fedloom.flower.client import CLIENT_APP_REF, make_client_app, partition_id
from fedloom.utils import machine_lock

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # Flower's SuperExec knob, same meaning
RECEIVED = b"Received successfully"  # the SuperNode's log line once a message is stored


class LoadedClient:
    """Client ``client_id`` of the run config at ``config``, built once and kept.

    :meth:`start` builds the model and partition in the background; a ``train`` waits for the
    build (a ``query`` is answered at once). ``failed`` holds the build's error, if any. With
    ``train_lock`` (a file path), training holds an exclusive lock on that file: clients on one
    machine given the same file train one at a time, each with all cores. ``app`` is the
    ClientApp to run this client's tasks with."""

    def __init__(self, config: str, client_id: int, train_lock: str | None = None) -> None:
        from fedloom.config import load_config

        self.cfg = load_config(config)
        self.client_id, self.train_lock = client_id, train_lock
        self.built = threading.Event()
        self.failed: str | None = None
        self.warmed = False
        self.app: ClientApp = make_client_app(self.train, self.secagg)

    def start(self) -> None:
        threading.Thread(target=self._build, name="fedloom-build", daemon=True).start()

    def _build(self) -> None:
        try:
            from fedloom.flower.apps import client_federation

            fed = client_federation(self.cfg, only=self.client_id)  # its own shard only
            n = len(fed.data.clients)
            if not 0 <= self.client_id < n:
                raise ValueError(
                    f"client {self.client_id} does not exist: the config's partition has {n} "
                    f"clients (--client-id 0..{n - 1})"
                )
            print(f"client {self.client_id}: model and partition loaded", flush=True)
        except Exception as e:  # noqa: BLE001  (reported to the user and to every task)
            self.failed = f"{type(e).__name__}: {e}"
            print(f"fedloom client {self.client_id}: {self.failed}", file=sys.stderr, flush=True)
        finally:
            self.built.set()

    def idle(self) -> None:
        """Work for an idle moment, on the thread that trains: once built, a warm-up (two
        training steps, undone: :meth:`Federation.warm_up`): a fresh process grows its memory
        and runs each kernel for the first time before its first round, not in it."""
        if self.warmed or not self.built.is_set() or self.failed is not None:
            return
        from fedloom.flower.apps import client_federation

        self.warmed = True
        with machine_lock(self.train_lock):
            seconds = client_federation(self.cfg, self.client_id).warm_up(self.client_id)
        print(f"client {self.client_id}: warmed up ({seconds:.1f} s)", flush=True)

    def _mine(self, ctx: Context) -> int:
        pid = partition_id(ctx)
        if pid != self.client_id:
            raise RuntimeError(
                f"a task for partition {pid} reached the fedloom client of partition "
                f"{self.client_id}"
            )
        return pid

    def secagg(self, ctx: Context) -> bool:
        self._mine(ctx)
        return self.cfg.privacy.secagg is not None

    def train(self, content: RecordDict, ctx: Context) -> tuple[RecordDict, RecordDict]:
        pid = self._mine(ctx)
        self.built.wait()
        if self.failed is not None:
            raise RuntimeError(f"client {pid} could not be built: {self.failed}")
        from fedloom.flower.apps import train_reply

        with machine_lock(self.train_lock):  # with a lock file: one training per machine
            t, r = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            answer = train_reply(self.cfg, content, ctx.state, pid, only=pid)
            seconds, used = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
        self.warmed = True
        cpu = used.ru_utime + used.ru_stime - r.ru_utime - r.ru_stime
        print(
            f"client {pid}: trained, update sent ({seconds:.1f} s; CPU {cpu / seconds:.0%} of a "
            f"core, {used.ru_minflt - r.ru_minflt} page faults)",
            flush=True,
        )
        return answer


def _retries() -> RetryInvoker:
    """Transport errors on loopback: a few quick retries, then the error (never Flower's
    process-wide default, which exits the process on some HTTP statuses)."""
    return RetryInvoker(
        lambda: exponential(max_delay=2),
        (httpx.TransportError,),
        max_tries=5,
        max_time=30.0,
    )


def poll_interval() -> float:
    """Seconds between ``AcquireTask`` polls while idle: ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``
    as for Flower's SuperExec (default 1 s)."""
    raw = os.environ.get(POLL_ENV, "1.0")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= 60:
        raise ValueError(f"{POLL_ENV}={raw!r}: give seconds between 0.01 and 60")
    return value


def check_app(fab_content: bytes) -> None:
    """Refuse a run whose app is not fedloom's: this process runs fedloom's ClientApp only."""
    components = get_fab_config(fab_content)["tool"]["flwr"]["app"]["components"]
    if components.get("clientapp") != CLIENT_APP_REF:
        raise RuntimeError(
            f"the run's ClientApp is {components.get('clientapp')!r}; a `fedloom client` runs "
            f"fedloom's ({CLIENT_APP_REF}). Start a plain `flower-supernode` for other apps."
        )


def _heartbeat(client: RuntimeHttpClient) -> Callable[[], bool]:
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False  # retried by the HeartbeatSender
        except httpx.HTTPStatusError as e:
            return e.response.status_code not in (503, 504)
        return True  # even if the task is gone at the SuperNode: its reply will be refused

    return beat


class TaskExecutor:
    """Claim ClientApp tasks from the SuperNode's Runtime API at ``address`` and run them with
    ``app`` in this process, one at a time: :meth:`serve` in the thread that should train.

    That is the main thread: glibc gives every other thread its own malloc arena, and a SmolLM2
    round trained in one took ~20% longer here (5 steps: 40.3 s vs 32.4-35.4 s on the main
    thread of the same process; the same with ``MALLOC_ARENA_MAX=1``), the in-process engine
    trains on its main thread too."""

    def __init__(
        self, address: str, secret: bytes, app: ClientApp, poll: float | None = None
    ) -> None:
        self.address, self.app = address, app
        self.poll = poll_interval() if poll is None else poll
        self._acquire = RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=True,
            root_certificates=None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                SuperExecAuthHttpInterceptor(
                    master_secret=secret, protected_methods={ACQUIRE_TASK}
                ),
            ],
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.tasks = 0

    def stop(self) -> None:
        """Make :meth:`serve` return (after the task it is running, if any)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Poll now rather than after the interval: the SuperNode has just stored a message."""
        self._wake.set()

    def watch(self, stream: IO[bytes], echo: IO[str]) -> threading.Thread:
        """Copy the SuperNode's log from ``stream`` to ``echo`` line by line and :meth:`wake`
        when it says it received a message: its task is then ready, and is claimed at once
        instead of at the next poll (up to ``poll`` seconds later). Should the log line change,
        tasks are still claimed at the next poll."""

        def copy() -> None:
            for line in iter(stream.readline, b""):
                echo.write(line.decode(errors="replace"))
                echo.flush()
                if RECEIVED in line:
                    self.wake()

        thread = threading.Thread(target=copy, name="supernode-log", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._acquire.close()

    def serve(
        self, done: Callable[[], bool] = lambda: False, idle: Callable[[], None] = lambda: None
    ) -> None:
        """Poll for tasks and run them until :meth:`stop` or ``done()`` (asked between polls);
        ``idle()`` runs, on this thread, whenever a poll found no task."""
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        failing_since: float | None = None
        while not self._stop.is_set() and not done():
            try:
                res = self._acquire.AcquireTask(request)
            except httpx.HTTPError as e:  # the SuperNode is still starting, or gone
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > 30:  # not a start-up delay: say so, keep trying
                    print(f"SuperNode Runtime API at {self.address}: {e}", file=sys.stderr)
                    failing_since = now
                self._stop.wait(min(1.0, self.poll))
                continue
            failing_since = None
            if res.HasField("task") and res.token:
                self.run_task(res.token)
            else:
                idle()
                self._wake.wait(self.poll)
                self._wake.clear()

    def run_task(self, token: str) -> None:
        """One task, as ``flwr-clientapp --token TOKEN`` runs it (without the process)."""
        client = RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=True,
            root_certificates=None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ],
            retry_invoker=_retries(),
        )
        heartbeat = HeartbeatSender(_heartbeat(client))
        heartbeat.start()
        message: Message | None = None
        context: Context | None = None
        reply: Message | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            message, context, _, fab = pull_task_input(client)
            check_app(fab.content)
            reply = self.app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as ex:  # noqa: BLE001  (the server records the client as failed)
            details = f"{type(ex)}:<'{ex}'>"  # flwr-clientapp's format
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            if message is not None:
                error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details)
                reply = Message(error, reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            except Exception:  # noqa: BLE001  (the SuperNode is gone; nothing to answer)
                print(traceback.format_exc(), file=sys.stderr, flush=True)
            heartbeat.stop()
            client.close()
            self.tasks += 1
