"""The Flower ServerApp and ClientApp.

Server: builds the same :class:`~fedloom.engine.Federation` as the in-process engine (model,
held-out data, strategy with its state) and runs the same round loop
(:func:`fedloom.engine.run`), with :class:`FlowerClients` sending each sampled client a
``train`` message instead of training it in-process.

Client (:func:`train_reply`): on a ``train`` message, loads its persistent state (SCAFFOLD's
c_i, its DP accountant) from ``Context.state``, runs :meth:`Federation.fit_client` on its own
partition with the received adapter, stores the new state and replies with the adapter, the
algorithm's extra tensors and metrics. One implementation of each algorithm serves both
engines. The ClientApp (:func:`fedloom.flower.client.make_client_app`) runs it in the
simulation actor's process, or in the ``fedloom client`` process, which keeps the model loaded
between rounds and runs its SuperNode's ClientApp tasks itself (:mod:`fedloom.flower.worker`).

Configuration: in simulation the apps are built around the run config
(:func:`make_server_app`, :func:`make_client_app`); in a deployment (``fedloom server`` /
``fedloom client``) the module-level ``server_app`` reads the run config path from Flower's
run config (``fedloom-config``, ``fedloom-out``, ``fedloom-resume``) and the client reads its
own config path and client id from the SuperNode's node config (``fedloom-config``,
``partition-id``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

import fedloom.flower  # noqa: F401  (offline Flower settings)
from fedloom.algorithms.base import ClientUpdate
from fedloom.config import load_config
from fedloom.engine.hooks import installed_turn
from fedloom.engine.inprocess import Federation, run
from fedloom.flower import client
from fedloom.flower.client import partition_id
from fedloom.flower.records import (
    load_client_state,
    read_train,
    read_update,
    save_client_state,
    scalar,
    train_content,
    update_content,
)
from fedloom.privacy.secagg import secagg_round, secagg_train
from fedloom.settings import RunConfig


class FlowerClients:
    """The engine's ClientRunner over a Flower Grid: client i is the SuperNode whose
    ``partition-id`` is i (asked once with a ``query`` message)."""

    def __init__(self, grid: Grid, fed: Federation, wait_for_nodes: float = 300.0) -> None:
        self.grid, self.fed = grid, fed
        self.timeout = fed.cfg.federation.client_timeout
        self.node_of = self._discover(len(fed.data.clients), wait_for_nodes)

    def _discover(self, n: int, wait: float) -> dict[int, int]:
        deadline = time.monotonic() + wait
        node_of: dict[int, int] = {}
        while True:
            asked = [nid for nid in self.grid.get_node_ids() if nid not in node_of.values()]
            msgs = [
                Message(RecordDict(), dst_node_id=nid, message_type=MessageType.QUERY)
                for nid in asked
            ]
            for reply in self.grid.send_and_receive(msgs, timeout=30) if msgs else []:
                if reply.has_error():
                    continue
                pid = int(scalar(reply.content.config_records["info"]["partition-id"]))
                if pid in node_of:
                    raise RuntimeError(f"two SuperNodes claim client {pid}")
                node_of[pid] = reply.metadata.src_node_id
            if len(node_of) >= n or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        missing = sorted(set(range(n)) - set(node_of))
        if missing:
            raise RuntimeError(
                f"no SuperNode for client(s) {missing} after {wait:.0f} s: start them with "
                "`fedloom client CONFIG --client-id I --server HOST:PORT`"
            )
        return node_of

    def fit(
        self, round_idx: int, cids: list[int], lr: float, done: Callable[[], None]
    ) -> tuple[list[ClientUpdate], dict[int, str]]:
        secagg = self.fed.cfg.privacy.secagg
        if secagg is not None:  # the round runs as Flower's SecAgg+ workflow
            result = secagg_round(
                self.grid, self.fed, secagg, self.node_of, round_idx, cids, lr, self.timeout
            )
            for _ in cids:
                done()
            return result
        strategy = self.fed.strategy
        msgs = [
            Message(
                train_content(strategy.broadcast(c), round_idx, c, lr),
                dst_node_id=self.node_of[c],
                message_type=MessageType.TRAIN,
                group_id=str(round_idx),
            )
            for c in cids
        ]
        # push, then pull by message id: a reply is matched to its client through the id of the
        # message it answers (an error for a dead node comes from the SuperLink, not the node)
        ids = list(self.grid.push_messages(msgs))
        client_of = dict(zip(ids, cids, strict=True))
        pending = set(ids)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        updates: dict[int, ClientUpdate] = {}
        failed: dict[int, str] = {}
        wait = 0.1  # between pulls, growing to 0.5 s: bounds the last reply's wait, few requests
        while pending and (deadline is None or time.monotonic() < deadline):
            for reply in self.grid.pull_messages(list(pending)):
                mid = reply.metadata.reply_to_message_id
                if mid not in pending:
                    continue
                pending.discard(mid)
                wait = 0.1  # the others are likely close behind
                cid = client_of[mid]
                if reply.has_error():
                    failed[cid] = f"client error: {reply.error.reason}"[:500]
                else:
                    updates[cid] = self.fed.receive(read_update(reply.content))
                done()
            if pending:
                time.sleep(wait)
                wait = min(0.5, wait * 1.5)
        for mid in pending:
            failed[client_of[mid]] = f"no reply within client_timeout ({self.timeout} s)"
        # sampled order, as in-process: the aggregation sums in this order
        return [updates[c] for c in cids if c in updates], failed


RunSpec = Callable[[Context], tuple[RunConfig, str, bool]]
"""(run config, output folder, resume) of a ServerApp's run, from its Flower Context."""


def make_server_app(spec: RunSpec) -> ServerApp:
    """The one ServerApp: builds the Federation (in its machine turn, like ``run``'s own build)
    and runs the engine's round loop with the rounds' clients on Flower's Grid. The simulation
    passes its config directly; a deployment reads it from Flower's run config
    (:func:`deployment_run`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg, out, resume = spec(context)
        turn = installed_turn()  # a hook the caller installed (engine.hooks), else none
        with turn():
            fed = Federation.build(cfg)
        run(cfg, out, federation=fed, clients=FlowerClients(grid, fed), resume=resume, turn=turn)

    return app


_FEDERATIONS: dict[str, Federation] = {}


def client_federation(cfg: RunConfig, only: int | None = None) -> Federation:
    """One Federation per config per process (`fedloom client` / simulation actor), built
    lazily and kept: later rounds reuse the loaded model and partition. ``only``: this process
    is that one client and builds and holds only its own shard, as a real deployment must (a
    simulation actor serves many partitions and holds them all)."""
    key = f"{cfg.to_dict()!r}|{only}"
    if key not in _FEDERATIONS:
        _FEDERATIONS[key] = Federation.build(cfg, only_client=only)
    return _FEDERATIONS[key]


def train_reply(
    cfg: RunConfig, content: RecordDict, state: RecordDict, pid: int, only: int | None = None
) -> tuple[RecordDict, RecordDict]:
    """A client's work on a ``train`` message: its persistent state (SCAFFOLD's c_i, its DP
    accountant) from ``state``, :meth:`Federation.fit_client` on partition ``pid`` with the
    received adapter; returns the reply content and the new state records."""
    fed = client_federation(cfg, only)
    fed.client_states[pid] = load_client_state(state)
    try:
        if cfg.privacy.secagg is not None:  # legacy FitIns/FitRes, masked by the mod
            reply = secagg_train(fed, content, pid, cfg.privacy.secagg)
        else:
            bc, round_idx, cid, lr = read_train(content)
            if cid != pid:
                raise RuntimeError(
                    f"message for client {cid} reached the SuperNode of client {pid}"
                )
            reply = update_content(fed.fit_client(round_idx, cid, lr, bc))
        new_state = RecordDict()
        save_client_state(new_state, fed.client_states[pid])
        return reply, new_state
    finally:
        fed.client_states.pop(pid, None)


def make_client_app(get_cfg: Callable[[Context], RunConfig]) -> ClientApp:
    """The ClientApp training in its own process (the simulation's actors)."""
    return client.make_client_app(
        lambda content, ctx: train_reply(get_cfg(ctx), content, ctx.state, partition_id(ctx)),
        lambda ctx: get_cfg(ctx).privacy.secagg is not None,
    )


def _cfg_from(config: Any, where: str) -> RunConfig:
    path = config.get("fedloom-config")
    if not path:
        raise RuntimeError(f"`fedloom-config` (path of the run config) missing from the {where}")
    return load_config(str(path))


def deployment_run(context: Context) -> tuple[RunConfig, str, bool]:
    """A deployment's run, from the run config `fedloom server` submits (`fedloom-config`,
    `fedloom-out`, `fedloom-resume`)."""
    rc = context.run_config
    out = str(rc.get("fedloom-out") or "runs/flower")
    return _cfg_from(rc, "run config"), out, bool(rc.get("fedloom-resume", False))


# the deployment's entry point (referenced from the app's pyproject.toml by `fedloom server`)
server_app = make_server_app(deployment_run)
