"""MLflow: a local SQLite store by default (``<run>/mlflow.db``; ``tracking.mlflow_uri`` or
``MLFLOW_TRACKING_URI`` for a shared store or a server); artifacts beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedloom.tracking.base import Tracker, register_tracker

MAX_PARAM = 500
"""MLflow's limit on a parameter value's length."""


@register_tracker("mlflow")
class MLflowTracker(Tracker):
    package = "mlflow"

    def start(self, run_name: str, params: dict[str, Any], resume_id: str | None) -> str | None:
        from mlflow.tracking import MlflowClient

        uri = (
            self.settings.mlflow_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{(self.out / 'mlflow.db').resolve()}"
        )
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(self.settings.experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            artifacts = (self.out / "mlartifacts").resolve().as_uri()
            exp_id = self.client.create_experiment(self.settings.experiment, artifacts)
        if resume_id is not None:
            self.run_id = resume_id
            return resume_id
        run = self.client.create_run(exp_id, run_name=run_name)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        batch = [Param(k, str(v)[:MAX_PARAM]) for k, v in sorted(params.items())]
        for i in range(0, len(batch), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=batch[i : i + 100])
        return self.run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k.replace(":", "_"), v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def finish(self, summary: dict[str, float], artifacts: list[Path]) -> None:
        self.log(0, {f"summary.{k}": v for k, v in summary.items()})
        for p in artifacts:
            if p.is_dir():
                self.client.log_artifacts(self.run_id, str(p), p.name)
            else:
                self.client.log_artifact(self.run_id, str(p))
        self.client.set_terminated(self.run_id)
