"""The errors a user can cause, under one base class.

``fedloom``'s ``main()`` catches :class:`FedloomError` once, for every command, and prints
``fedloom: <message>`` (what is wrong, where, and how to fix it) with exit status 2; any other
exception is a bug and keeps its traceback. Each subclass also derives from the builtin its
callers caught before (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so library code
that catches those keeps working.
"""

from __future__ import annotations

import os


class FedloomError(Exception):
    """Something the user can fix: a config, a file, a row, a budget, a deployment setting."""


class EnvError(FedloomError, ValueError):
    """A ``FEDLOOM_*`` environment variable holds a value fedloom cannot use."""


class CheckpointError(FedloomError, ValueError):
    """A run folder's checkpoint is missing, unreadable or holds more than tensors and plain
    values (a tampered or foreign file is refused, never unpickled)."""


def env_int(
    name: str, default: int | None, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """``int(os.environ[name])`` with one clear error when the value is not a whole number
    (or is outside [``minimum``, ``maximum``]); ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EnvError(f"environment variable {name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise EnvError(f"environment variable {name}={raw!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise EnvError(f"environment variable {name}={raw!r} must be <= {maximum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """``os.environ[name]`` checked against ``choices``; ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw not in choices:
        raise EnvError(
            f"environment variable {name}={raw!r} is not one of {list(choices)}; "
            f"unset it for the default ({default})"
        )
    return raw
