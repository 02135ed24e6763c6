"""Small shared helpers: cache folder, seeded RNGs, byte counts, JSONL files."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import random
import resource
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]


INVOKED: str | None = None
"""The fedloom command line this process runs (set by the CLI; recorded in model cards)."""


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


_SEEDED_INIT = threading.Lock()


@contextlib.contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Run code that draws from torch's global generator (weight init in transformers and
    PEFT) with it seeded to ``seed``, then restore the caller's stream. One thread at a time:
    the global generator is process-wide, so two threads initialising models at once (a
    `fedloom client` builds in the background) would otherwise draw from each other's
    stream and get different weights."""
    with _SEEDED_INIT, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_nbytes(state: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def available_cores() -> int:
    """CPU threads to use: ``FEDLOOM_THREADS`` if set (e.g. several SuperNodes sharing one
    machine: ``fedloom client --threads``), else the cores this process may run on."""
    from fedloom.errors import env_int

    threads = env_int("FEDLOOM_THREADS", None, minimum=1)
    if threads is not None:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


ONEDNN_CACHE = 64
"""oneDNN primitives kept per process (its default: 1024)."""


def bound_onednn_cache() -> None:
    """Keep at most :data:`ONEDNN_CACHE` compiled oneDNN primitives (``FEDLOOM``'s default; an
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` already set wins). bf16 matmuls on CPU run through
    oneDNN, which JIT-compiles a primitive per matrix shape and caches up to 1024 of them; packed
    micro-batches have a new length almost every step, so every step added ~25 primitives and
    training memory grew every round (SmolLM2, bf16: 3.2 -> 6.3 GiB over 20 rounds; fp32 runs
    through MKL and stayed flat). A step reuses its own shapes across the 30 layers, so 64 keeps
    every hit that matters (same CPU time in a paired run). oneDNN reads the variable at its
    first primitive: this must run before the process's first bf16 matmul."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE))


def keep_freed_memory() -> bool:
    """With ``FEDLOOM_MALLOC=keep``, keep memory that the process frees for its own reuse (glibc
    ``mallopt``: ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD = -1``); the call that CPU training
    makes once, when it loads its model; True if it took effect. By default (``default``) glibc
    is left as it is.

    glibc serves big allocations with their own ``mmap`` and unmaps them on free, so a training
    step's big activations come back as fresh pages at every step; kept, the heap grows once
    and later steps fault ~0 times. Measured (issue #32, SmolLM2 bf16, packed, response-only
    logits, the two settings side by side on the two cores): ``keep`` 4-5% faster (2.6 vs
    11.7 s of kernel time over 50 steps) but ~0.2 GiB more in a training loop, and in a full
    run its heap fragments: resident memory rose 2.7 -> 3.5 GiB over 11 rounds before it
    settled. So memory comes first by default; ``keep`` is the opt-in for speed on a machine
    with memory to spare. Other C libraries are left alone."""
    from fedloom.errors import env_choice

    if env_choice("FEDLOOM_MALLOC", "default", ("keep", "default")) == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, -1))


def rss_gib() -> dict[str, float]:
    """This process's memory: resident now (``rss_gib``) and its peak so far (``peak_rss_gib``),
    in GiB. Linux reads /proc (now) and getrusage (peak, KiB); macOS reports the peak in bytes
    and no current figure (given as the peak)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_b = peak if sys.platform == "darwin" else peak * 1024
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        now_b = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        now_b = peak_b
    return {"rss_gib": round(now_b / 2**30, 3), "peak_rss_gib": round(peak_b / 2**30, 3)}


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[None]:
    """Mixed-precision autocast on ``device`` when ``dtype`` is set (bf16), else a no-op (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path, cut_ok: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file; ``cut_ok``: skip lines a killed job cut short (generation files:
    such a prompt was generated again on the rerun, so nothing is lost)."""
    rows = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        if not ln.strip():
            continue
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            if not cut_ok:
                raise
    return rows
