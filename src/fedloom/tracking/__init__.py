"""Experiment tracking (`logging: [tensorboard, mlflow, wandb]` in a run config): the resolved
config as parameters, every round's metrics as steps, the summary, and the adapter and plots
as artifacts — written by each library's own writer, offline by default. One file per tracker,
registered in ``TRACKERS``."""

from fedloom.tracking import mlflow_tracker, tensorboard, wandb_tracker  # noqa: F401
from fedloom.tracking.base import (
    TRACKERS,
    Tracker,
    Trackers,
    TrackingError,
    flatten,
    register_tracker,
    round_metrics,
)

__all__ = [
    "TRACKERS",
    "Tracker",
    "Trackers",
    "TrackingError",
    "flatten",
    "register_tracker",
    "round_metrics",
]
