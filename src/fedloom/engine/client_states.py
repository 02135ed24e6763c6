"""Per-client algorithm state (SCAFFOLD's c_i, top-k residuals) kept on disk, not in memory:
a federation of 747 clients costs about the memory of one of 10 when 10 are sampled.

Each write goes to a new file; the checkpoint records the index (client -> file) of the last
finished round, and files a later round superseded are deleted only after that checkpoint is
written — so a run killed mid-round resumes from consistent states.
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import torch

from fedloom.errors import CheckpointError


class ClientStates(MutableMapping[int, dict[str, Any]]):
    def __init__(self, directory: str | Path, index: dict[int, str] | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[int, str] = dict(index or {})
        self._garbage: list[str] = []
        self._counter = itertools.count(
            1 + max((int(Path(f).stem.split("-")[1]) for f in self._index.values()), default=0)
        )

    def __getitem__(self, cid: int) -> dict[str, Any]:
        return load_plain(self.dir / self._index[cid], f"client {cid}'s state")

    def __setitem__(self, cid: int, state: dict[str, Any]) -> None:
        if cid in self._index:
            self._garbage.append(self._index.pop(cid))
        if not state:  # an empty state costs nothing
            return
        name = f"{cid}-{next(self._counter)}.pt"
        tmp = self.dir / (name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.dir / name)
        self._index[cid] = name

    def __delitem__(self, cid: int) -> None:
        self._garbage.append(self._index.pop(cid))

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._index))

    def __len__(self) -> int:
        return len(self._index)

    def index(self) -> dict[int, str]:
        """client -> file, for the checkpoint."""
        return dict(self._index)

    def collect(self) -> None:
        """Delete files superseded since the last call (after a checkpoint is written), and
        files no index refers to (left by a run killed mid-round)."""
        for name in self._garbage:
            (self.dir / name).unlink(missing_ok=True)
        self._garbage = []
        live = set(self._index.values())
        for f in self.dir.glob("*.pt*"):
            if f.name not in live:
                f.unlink(missing_ok=True)


def load_plain(path: Path, what: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` as a dict, or a :class:`CheckpointError`."""
    try:
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: refusing to load this {what}: it holds Python objects other than tensors "
            f"and plain values ({first}); it was not written by this fedloom, or was tampered "
            "with. Start the run again without --resume"
        ) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: cannot read this {what} ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: this {what} is not a mapping of state")
    return dict(state)
