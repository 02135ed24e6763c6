"""The tracker interface, its registry, and the pure functions that turn a run's config and
rows into what trackers take (flat names, numbers only)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from fedloom.errors import FedloomError


class TrackingError(FedloomError, RuntimeError):
    """A tracker cannot start (its package is missing, its store cannot be opened)."""


def flatten(d: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [2, 3]}`` -> ``{"a.b": 1, "c.0": 2, "c.1": 3}``; scalars kept."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= flatten(v, f"{prefix}{sep}{k}" if prefix else str(k), sep)
        return out
    if isinstance(d, list | tuple):
        if not d:
            return {prefix: "[]"}
        out = {}
        for i, v in enumerate(d):
            out |= flatten(v, f"{prefix}{sep}{i}" if prefix else str(i), sep)
        return out
    return {prefix: d}


def numbers(d: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat dict (booleans and None left out)."""
    return {
        k: float(v)
        for k, v in d.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


ROUND_KEYS = (
    "train_loss", "eval_loss", "lr", "bytes_up", "bytes_down", "client_loss", "client_steps",
    "client_tokens", "client_train_seconds", "eval_loss_by_client", "eval_loss_by_domain",
    "epsilon_by_client", "epsilon_max", "central_dp", "aggregation", "benchmarks",
    "eval_preference", "eval_classify", "seconds", "rss_gib", "peak_rss_gib",
)  # fmt: skip
"""The round-row fields a tracker logs (numbers within them; ids and lists of clients are not
metrics)."""


def round_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A `metrics.jsonl` row as flat numeric metrics: ``train_loss``, ``client_loss.3``,
    ``aggregation.update_norm.3``, ``epsilon_max`` ..."""
    return numbers(flatten({k: row[k] for k in ROUND_KEYS if row.get(k) is not None}))


class Tracker:
    """One tracking backend for one run."""

    name: ClassVar[str]
    package: ClassVar[str]
    """The module it needs (a missing one is one line naming the extra to install)."""

    def __init__(self, out: Path, settings: Any) -> None:
        self.out, self.settings = out, settings

    def start(self, run_name: str, params: dict[str, Any], resume_id: str | None) -> str | None:
        """Open the run (or reopen ``resume_id``); returns an id to reopen it with."""
        raise NotImplementedError

    def log(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, float], artifacts: list[Path]) -> None:
        raise NotImplementedError


TRACKERS: dict[str, type[Tracker]] = {}


def register_tracker(name: str) -> Callable[[type[Tracker]], type[Tracker]]:
    def deco(cls: type[Tracker]) -> type[Tracker]:
        if name in TRACKERS:
            raise ValueError(f"tracker {name!r} is already registered")
        cls.name = name
        TRACKERS[name] = cls
        return cls

    return deco


def require_package(tracker: str, module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TrackingError(
            f"`logging: [{tracker}]` needs the {module} package: pip install 'fedloom[tracking]'"
        )


class Trackers:
    """The run's trackers together; ids kept in ``out/tracking.json`` so a resumed run logs
    into the same runs."""

    def __init__(self, names: list[str], out: Path, settings: Any) -> None:
        for n in names:
            require_package(n, TRACKERS[n].package)
        self.out = out
        self.items = [TRACKERS[n](out, settings) for n in names]

    def start(self, run_name: str, config: dict[str, Any]) -> None:
        if not self.items:
            return
        ids_path = self.out / "tracking.json"
        ids = json.loads(ids_path.read_text()) if ids_path.exists() else {}
        params = flatten(config)
        for t in self.items:
            ids[t.name] = t.start(run_name, params, ids.get(t.name))
        ids_path.write_text(json.dumps(ids, indent=2))

    def log_round(self, row: dict[str, Any]) -> None:
        metrics = round_metrics(row)
        for t in self.items:
            t.log(int(row["round"]), metrics)

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.items:
            return
        keep = {k: v for k, v in summary.items() if k not in ("samples", "client_sizes")}
        flat = numbers(flatten(keep))
        artifacts = [
            p
            for p in (self.out / "summary.json", self.out / "adapter", self.out / "plots")
            if p.exists()
        ]
        for t in self.items:
            t.finish(flat, artifacts)
