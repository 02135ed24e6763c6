"""The ClientApp.

:func:`make_client_app` wires a ClientApp from two functions: ``train(content, ctx)`` (the
train message's content -> the reply content and the client's new persistent state records)
and ``secagg_enabled(ctx)`` (whether Flower's ``secaggplus_mod`` masks the reply). The
simulation builds it around :func:`fedloom.flower.apps.train_reply` in the actor's process;
``fedloom client`` around its :class:`~fedloom.flower.worker.LoadedClient`, in its own process
(it is its SuperNode's SuperExec: :mod:`fedloom.flower.worker`).

:data:`client_app` (:data:`CLIENT_APP_REF`, named in the app that ``fedloom server`` submits) is
what a plain ``flower-supernode`` runs: Flower starts a fresh ``flwr-clientapp`` process for
every message, which here builds the client (model and partition) before training, every
round. It works, but ``fedloom client`` is the way to run a client.

This module stays light to import: no torch, no fedloom engine at module level.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

import fedloom.flower  # noqa: F401  (offline Flower settings)

TrainFn = Callable[[RecordDict, Context], tuple[RecordDict, RecordDict]]


def partition_id(ctx: Context) -> int:
    return int(ctx.node_config["partition-id"])


def make_client_app(train: TrainFn, secagg_enabled: Callable[[Context], bool]) -> ClientApp:
    """A ClientApp answering ``query`` (which client am I) and ``train`` messages."""
    app = ClientApp()

    def secagg_mod(msg: Message, ctx: Context, call_next: ClientAppCallable) -> Message:
        if secagg_enabled(ctx):
            return secaggplus_mod(msg, ctx, call_next)
        return call_next(msg, ctx)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        info = ConfigRecord({"partition-id": partition_id(context)})
        return Message(RecordDict({"info": info}), reply_to=msg)

    @app.train(mods=[secagg_mod])
    def train_handler(msg: Message, context: Context) -> Message:
        content, state = train(msg.content, context)
        # only the client's own records: secaggplus_mod keeps its state in the same Context
        for key, record in state.items():
            context.state[key] = record
        return Message(content, reply_to=msg)

    return app


# -- what a plain `flower-supernode` runs --------------------------------------------------------

CLIENT_APP_REF = "fedloom.flower.client:client_app"


def _config_path(ctx: Context) -> str:
    path = ctx.node_config.get("fedloom-config")
    if not path:
        raise RuntimeError("`fedloom-config` (path of the run config) missing from the node config")
    return str(path)


def _standalone_secagg(ctx: Context) -> bool:
    from fedloom.config import load_config

    return load_config(_config_path(ctx)).privacy.secagg is not None


def _standalone_train(content: RecordDict, ctx: Context) -> tuple[RecordDict, RecordDict]:
    from fedloom.config import load_config
    from fedloom.flower.apps import train_reply

    pid = partition_id(ctx)  # this process serves one message of one partition: only its shard
    return train_reply(load_config(_config_path(ctx)), content, ctx.state, pid, only=pid)


client_app = make_client_app(_standalone_train, _standalone_secagg)
