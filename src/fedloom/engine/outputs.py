"""The results schema: one ``metrics.jsonl`` row per round and ``summary.json`` per run, the
same keys for every task and algorithm (a value is ``null`` / empty where it does not apply).

``SCHEMA_VERSION`` changes whenever a key is added, removed or changes meaning; readers (the
benchmark grid) check it. docs/outputs.md documents every field.
"""

from __future__ import annotations

from typing import Any

from fedloom.algorithms import ClientUpdate

SCHEMA_VERSION = 6


def task_keys() -> tuple[list[str], list[str]]:
    """(round-row keys, summary keys) that the registered tasks add: each task's full held-out
    result goes under its own key, null in runs of other tasks."""
    from fedloom.tasks import TASKS

    row = sorted({t.metrics_key for t in TASKS.values()})
    summary = sorted(
        f"{when}_{t.summary_key}"
        for t in TASKS.values()
        if t.summary_key is not None
        for when in ("base", "final")
    )
    return row, summary


ROUND_FIELDS = (
    "schema_version",
    "round",
    "task",
    "algorithm",
    "clients",
    "lr",
    "train_loss",
    "client_loss",
    "client_update_norm",
    "client_steps",
    "client_train_seconds",
    "client_tokens",
    "bytes_up",
    "bytes_down",
    "failed_clients",
    "eval_loss",
    "eval_loss_by_client",
    "benchmarks",
    "epsilon",
    "epsilon_by_client",
    "epsilon_max",
    "retired_clients",
    "central_dp",
    "aggregation",
    "seconds",
    "rss_gib",
    "peak_rss_gib",
)
"""Keys of every ``metrics.jsonl`` row, besides the tasks' own (:func:`task_keys`)."""

SUMMARY_FIELDS = (
    "schema_version",
    "task",
    "algorithm",
    "model",
    "rounds",
    "rounds_completed",
    "num_clients",
    "client_sizes",
    "malicious_clients",
    "precision",
    "packing",
    "device",
    "base_eval_loss",
    "final_eval_loss",
    "final_eval_loss_by_client",
    "bytes_up_total",
    "bytes_down_total",
    "train_seconds",
    "wall_seconds",
    "peak_rss_gib",
    "benchmarks",
    "samples",
    "privacy",
)
"""Keys of ``summary.json``, besides the tasks' own (:func:`task_keys`)."""


def round_row(
    rnd: int,
    task: str,
    algorithm: str,
    sampled: list[int],
    lr: float,
    updates: list[ClientUpdate],
    failed: dict[int, str],
) -> dict[str, Any]:
    """A round's row after aggregation: the clients' figures; evaluation, privacy and time
    fields start empty and are filled in by the round loop."""
    row: dict[str, Any] = {k: None for k in (*ROUND_FIELDS, *task_keys()[0])}
    row |= {
        "schema_version": SCHEMA_VERSION,
        "round": rnd + 1,
        "task": task,
        "algorithm": algorithm,
        "clients": sampled,
        "lr": lr,
        "train_loss": sum(u.metrics["loss"] for u in updates) / len(updates),
        "client_loss": {str(u.client_id): u.metrics["loss"] for u in updates},
        "client_update_norm": {
            str(u.client_id): u.metrics["update_norm"]
            for u in updates
            if "update_norm" in u.metrics
        },
        "client_steps": {
            str(u.client_id): int(u.metrics["steps"]) for u in updates if "steps" in u.metrics
        },
        "client_train_seconds": sum(u.metrics["seconds"] for u in updates),
        "client_tokens": int(sum(u.metrics.get("tokens", 0) for u in updates)),
        "bytes_up": int(sum(u.metrics["bytes_up"] for u in updates)),
        "bytes_down": int(sum(u.metrics["bytes_down"] for u in updates)),
        "failed_clients": {str(c): why for c, why in failed.items()},
        "benchmarks": {},
        "epsilon": {},
        "epsilon_by_client": {},
        "retired_clients": [],
    }
    return row


def empty_summary() -> dict[str, Any]:
    return {k: None for k in (*SUMMARY_FIELDS, *task_keys()[1])} | {
        "schema_version": SCHEMA_VERSION
    }
