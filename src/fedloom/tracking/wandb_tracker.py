"""Weights & Biases, offline by default (``<run>/wandb/offline-run-*``; `wandb sync` uploads it
later); ``tracking.wandb_mode: online`` logs live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedloom.tracking.base import Tracker, register_tracker


@register_tracker("wandb")
class WandbTracker(Tracker):
    package = "wandb"

    def start(self, run_name: str, params: dict[str, Any], resume_id: str | None) -> str | None:
        import wandb

        self.run = wandb.init(
            project=self.settings.experiment,
            name=run_name,
            dir=str(self.out),
            config=params,
            mode=self.settings.wandb_mode,
            id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(silent=True, console="off"),
        )
        return str(self.run.id)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, float], artifacts: list[Path]) -> None:
        import wandb

        self.run.summary.update(summary)
        art = wandb.Artifact(f"{self.run.id}-outputs", type="fedloom-run")
        for p in artifacts:
            if p.is_dir():
                art.add_dir(str(p), name=p.name)
            else:
                art.add_file(str(p))
        self.run.log_artifact(art)
        self.run.finish()
