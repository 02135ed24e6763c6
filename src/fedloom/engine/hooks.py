"""Run hooks: code a caller wraps around each part of a run that uses the machine (the model
build, the baseline evaluation, every round, the final evaluation).

The round loop calls ``with turn():`` and knows nothing else. The default does nothing. A
caller in the same process passes its own (``run(cfg, out, turn=...)``); a caller that starts a
run in a process it does not control (a Flower ServerApp, a child process) names one in
``FEDLOOM_RUN_HOOK=module:function`` (a function that returns a context manager), which
:func:`installed_turn` imports. ``benchmarks/engine_overhead.py --interleave`` installs its
machine turn lock this way so that two runs on one machine take the machine in turns.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager

from fedloom.errors import EnvError

Turn = Callable[[], AbstractContextManager[None]]
HOOK_ENV = "FEDLOOM_RUN_HOOK"


def no_turn() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def installed_turn() -> Turn:
    """The hook ``FEDLOOM_RUN_HOOK`` names, else :func:`no_turn`; a malformed or missing hook
    is one :class:`~fedloom.errors.EnvError`."""
    spec = os.environ.get(HOOK_ENV, "").strip()
    if not spec:
        return no_turn
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise EnvError(f"environment variable {HOOK_ENV}={spec!r}: write module:function")
    try:
        hook = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise EnvError(f"environment variable {HOOK_ENV}={spec!r}: cannot load it ({e})") from None
    if not callable(hook):
        raise EnvError(f"environment variable {HOOK_ENV}={spec!r}: {name} is not callable")
    return hook
