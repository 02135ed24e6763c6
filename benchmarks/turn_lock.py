"""A machine turn lock for runs that share one machine (``engine_overhead.py --interleave``).

With ``FEDLOOM_TURN_LOCK=FILE`` set, :func:`turn` holds an exclusive ``flock`` on FILE and, once
it is released, pauses 0.2 s so that a run waiting for it gets it (without the pause the
releaser would win again); without it, nothing. A run takes its turn for each part that uses
the machine (its model build, baseline, every round, final evaluation), so two runs given the
same FILE alternate round by round, each with all cores, and a round's time leaves the wait
out. Installed in a run as a hook: ``run(..., turn=turn)`` in this process, or
``FEDLOOM_RUN_HOOK=turn_lock:turn`` (with this folder on ``PYTHONPATH``) in processes the
benchmark starts, a Flower ServerApp included (:mod:`fedloom.engine.hooks`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from fedloom.utils import machine_lock

TURN_ENV = "FEDLOOM_TURN_LOCK"
HOOK = "turn_lock:turn"


@contextlib.contextmanager
def turn() -> Iterator[None]:
    path = os.environ.get(TURN_ENV) or None
    with machine_lock(path):
        yield
    if path is not None:
        time.sleep(0.2)  # the waiting run wakes now; without a pause this one would win again
