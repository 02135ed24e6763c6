"""The ClientApp, and the one a deployed SuperNode runs.

:func:`make_client_app` wires a ClientApp from two functions: ``train(content, ctx)`` (the
train message's content -> the reply content and the client's new persistent state records)
and ``secagg_enabled(ctx)`` (whether Flower's ``secaggplus_mod`` masks the reply). The
simulation builds it around :func:`fedloom.flower.apps.train_reply` in the actor's process.

A deployed SuperNode (Flower 1.42) starts a fresh ``flwr-clientapp`` process for every
message: importing torch, transformers and PEFT and loading the model again every round
(~12 s per client per round for SmolLM2 on a CPU; minutes for a 7B model). So ``fedloom
client`` keeps the client's model and partition loaded in a training worker
(:mod:`fedloom.flower.worker`) next to its SuperNode, and the deployed :data:`client_app` is
a relay: it imports only Flower, hands the message content and the client's state to the
worker over a local socket and returns its answer. Masking (SecAgg+) still happens in the
ClientApp, on what the worker returns. Without a worker (a SuperNode started by hand) the
relay trains in its own process instead.

This module must stay light to import: no torch, no fedloom engine at module level.
"""

from __future__ import annotations

import os
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


# -- the deployed relay ------------------------------------------------------------------------


def _worker_address() -> tuple[str, bytes] | None:
    from fedloom.flower.worker import ADDRESS_ENV, KEY_ENV

    address = os.environ.get(ADDRESS_ENV)
    return (address, bytes.fromhex(os.environ[KEY_ENV])) if address else None


def _config_path(ctx: Context) -> str:
    path = ctx.node_config.get("fedloom-config")
    if not path:
        raise RuntimeError("`fedloom-config` (path of the run config) missing from the node config")
    return str(path)


def _deployed_secagg(ctx: Context) -> bool:
    worker = _worker_address()
    if worker is not None:
        from fedloom.flower.worker import ask

        return bool(ask(worker, ("info", partition_id(ctx)))["secagg"])
    from fedloom.config import load_config

    return load_config(_config_path(ctx)).privacy.secagg is not None


def _deployed_train(content: RecordDict, ctx: Context) -> tuple[RecordDict, RecordDict]:
    worker = _worker_address()
    if worker is not None:
        from fedloom.flower.worker import ask

        reply, state = ask(worker, ("train", partition_id(ctx), content, ctx.state))
        return reply, state
    from fedloom.config import load_config
    from fedloom.flower.apps import train_reply

    return train_reply(load_config(_config_path(ctx)), content, ctx.state, partition_id(ctx))


client_app = make_client_app(_deployed_train, _deployed_secagg)
