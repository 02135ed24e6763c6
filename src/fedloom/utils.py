"""Small shared helpers: cache folder, seeded RNGs, byte counts."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import torch

StateDict = dict[str, torch.Tensor]


def cache_dir() -> Path:
    """fedloom's cache (converted models, fetched data): ``$FEDLOOM_CACHE`` or ~/.cache/fedloom."""
    root = os.environ.get("FEDLOOM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fedloom"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def rng_for(*keys: int | str) -> random.Random:
    """A private RNG seeded by a tuple of keys, e.g. ``rng_for(seed, "sample", round, client)``.

    Never touches the global RNG; string seeds are hashed with SHA-512 by ``random``, so the
    stream is identical across processes and Python versions.
    """
    return random.Random("/".join(str(k) for k in keys))


def state_nbytes(state: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def available_cores() -> int:
    """CPU threads to use: ``FEDLOOM_THREADS`` if set (e.g. several SuperNodes sharing one
    machine: ``fedloom client --threads``), else the cores this process may run on."""
    if os.environ.get("FEDLOOM_THREADS"):
        return max(1, int(os.environ["FEDLOOM_THREADS"]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[None]:
    """Mixed-precision autocast on ``device`` when ``dtype`` is set (bf16), else a no-op (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
