"""The command line's commands: one module each (``add_arguments(parser)``, ``main(args)``,
``HELP``), registered in :data:`COMMANDS` in the order ``fedloom --help`` lists them."""

from __future__ import annotations

from types import ModuleType

from fedloom.commands import (
    algorithms,
    audit,
    bench,
    certs,
    client,
    data,
    evaluate,
    export,
    judge,
    models,
    pipeline,
    run,
    server,
)

COMMANDS: dict[str, ModuleType] = {
    "run": run,
    "eval": evaluate,
    "judge": judge,
    "pipeline": pipeline,
    "bench": bench,
    "audit": audit,
    "data": data,
    "server": server,
    "client": client,
    "certs": certs,
    "algorithms": algorithms,
    "models": models,
    "export": export,
}
